"""An emulated network volume: a read-only FUSE passthrough of a folder that waits a fixed latency on every
read request and counts the read requests and bytes.

A network volume's cost is the round trip of each read, not its bandwidth; this mount has the same shape
(every request the kernel sends pays `latency_ms`, requests in flight at once overlap, as on a network
filesystem client). Symlinks are shown as the files they point to, so a Hugging Face cache snapshot mounts
as plain files. The kernel keeps a file's pages cached across opens (`kernel_cache`), as NFS does for an
unchanged file; unmounting drops them, so every mount starts cold.

    python -m devtools.slow_volume SOURCE MOUNTPOINT --latency-ms 2 --stats /tmp/stats   # foreground server

    with SlowVolume(source, mountpoint, latency_ms=2) as volume:   # a server process, unmounted on exit
        ...read files under mountpoint...
        volume.stats()  # VolumeStats(requests=..., bytes=...)

Needs /dev/fuse, libfuse3 (Debian `fuse3`) and the `mfusepy` package: `fuse_unavailable_reason()` says
which is missing.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Fixed-width stats record "<requests> <bytes>\n", rewritten in place after each read: a reader never
# sees a half-written record of a different length.
_STATS_FORMAT = "{:>20d} {:>20d}\n"
# Requests a network filesystem client keeps in flight; libfuse's own default is 10 threads.
SERVER_THREADS = 64
MOUNT_WAIT_S = 30.0


@dataclass(frozen=True)
class VolumeStats:
    requests: int
    bytes: int


def fuse_unavailable_reason() -> str | None:
    """Why a FUSE mount cannot be made here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent (a container without FUSE: run it with --device /dev/fuse)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3: apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401  (loads libfuse3 when imported)
    except ImportError:
        return "the mfusepy package is not installed (pip install mfusepy; it is in requirements-dev.txt)"
    except OSError as error:
        return f"libfuse3 cannot be loaded ({error}): apt-get install fuse3"
    return None


def read_stats(path: Path) -> VolumeStats:
    text = path.read_text().split()
    return VolumeStats(requests=int(text[0]), bytes=int(text[1])) if len(text) == 2 else VolumeStats(0, 0)


class SlowVolume:
    """A slow_volume server process mounting `source` at `mountpoint`; a context manager that unmounts."""

    def __init__(self, source: str | Path, mountpoint: str | Path, latency_ms: float) -> None:
        self.source, self.mountpoint, self.latency_ms = Path(source), Path(mountpoint), latency_ms
        self._stats_file = Path(tempfile.mkstemp(prefix="slow-volume-stats-")[1])
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "SlowVolume":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "devtools.slow_volume", str(self.source), str(self.mountpoint),
             "--latency-ms", str(self.latency_ms), "--stats", str(self._stats_file)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + MOUNT_WAIT_S
        while not os.path.ismount(self.mountpoint):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"slow_volume: mounting {self.source} at {self.mountpoint} failed")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stats_file.unlink(missing_ok=True)

    def stats(self) -> VolumeStats:
        """Read requests and bytes served since the mount."""
        return read_stats(self._stats_file)


def _operations(source: Path, latency_s: float, stats_path: Path):
    import mfusepy

    class SlowPassthrough(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._requests = 0
            self._bytes = 0
            self._stats_fd = os.open(stats_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(self._stats_fd, _STATS_FORMAT.format(0, 0).encode(), 0)

        def init_with_config(self, conn_info, config) -> None:
            # The kernel's cap on readahead requests in flight (12 by default) would hide the server's threads.
            if conn_info is not None:
                conn_info.max_background = SERVER_THREADS
                conn_info.congestion_threshold = SERVER_THREADS * 3 // 4

        def _real(self, path: str) -> str:
            return os.path.join(source, path.lstrip("/"))

        def getattr(self, path: str, fh: int | None = None) -> dict:
            try:
                st = os.stat(self._real(path))  # symlinks followed: shown as the files they point to
            except OSError as error:
                raise mfusepy.FuseOSError(error.errno) from None
            attrs = {key: getattr(st, key) for key in ("st_size", "st_nlink", "st_uid", "st_gid",
                                                       "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            attrs["st_mode"] = st.st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(f"{key}_ns")
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def open(self, path: str, flags: int) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
                raise mfusepy.FuseOSError(errno.EROFS)
            return os.open(self._real(path), os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            time.sleep(latency_s)  # the round trip: requests in flight at once wait side by side
            data = os.pread(fh, size, offset)
            with self._lock:
                self._requests += 1
                self._bytes += len(data)
                os.pwrite(self._stats_fd, _STATS_FORMAT.format(self._requests, self._bytes).encode(), 0)
            return data

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def statfs(self, path: str) -> dict:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                      "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

    return SlowPassthrough()


def serve(source: Path, mountpoint: Path, latency_ms: float, stats_path: Path) -> None:
    """Mount and serve in the foreground until unmounted."""
    import mfusepy

    mfusepy.FUSE(
        _operations(source.resolve(), latency_ms / 1000.0, stats_path),
        str(mountpoint),
        foreground=True,
        ro=True,
        fsname="slow_volume",
        subtype="slow_volume",
        kernel_cache=True,
        max_threads=SERVER_THREADS,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.slow_volume", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--latency-ms", type=float, default=2.0, help="added to every read request")
    parser.add_argument("--stats", type=Path, required=True, help="file the request and byte counts are kept in")
    args = parser.parse_args(argv)
    reason = fuse_unavailable_reason()
    if reason:
        print(f"slow_volume: {reason}", file=sys.stderr)
        return 2
    serve(args.source, args.mountpoint, args.latency_ms, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
