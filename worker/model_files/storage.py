"""Where a model's weights live: local disk (a baked image, the container disk) or a network/FUSE filesystem
(RunPod's network volume and the like), from the mount table, plus how many weight files and bytes there are.

The filesystem serving a path is the mount table's entry with the longest mount point that contains the
path (the kernel's rule; vLLM's own NFS check uses it too). Weight reads on a network filesystem pay a round
trip each, so the worker reads them differently there (worker/startup/weight_loading.py).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from worker.model_files.download import WEIGHT_FORMATS

MOUNT_TABLE = Path("/proc/mounts")
# Filesystems reached over a network (or a hypervisor channel that costs as much per request).
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "glusterfs", "gpfs", "beegfs", "afs",
    "9p", "ocfs2", "orangefs", "pvfs2",
})
# FUSE filesystems that are local disk under the hood (rootless Docker's root, LXC's /proc views).
LOCAL_FUSE_FSTYPES = frozenset({"fuse.fuse-overlayfs", "fuse.lxcfs", "fuse.squashfuse", "fuse.portal"})
LOCAL, NETWORK = "local", "network"


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class WeightStorage:
    """The storage the engine loads weights from, and what it loads."""

    kind: str  # LOCAL or NETWORK
    fstype: str
    mount_point: str
    files: tuple[str, ...]
    bytes: int

    @property
    def is_network(self) -> bool:
        return self.kind == NETWORK

    @property
    def is_safetensors(self) -> bool:
        return bool(self.files) and all(name.endswith(".safetensors") for name in self.files)

    def summary(self) -> str:
        return f"storage={self.kind} ({self.fstype or 'unknown'} at {self.mount_point}) files={len(self.files)} bytes={self.bytes}"


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_mounts(text: str) -> list[Mount]:
    """The entries of a /proc/mounts text (spaces and tabs in paths come octal-escaped: \\040)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts.append(Mount(point=_unescape(parts[1]), fstype=parts[2], source=_unescape(parts[0])))
    return mounts


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount serving `path` (an absolute, resolved path): the longest mount point containing it."""
    best = None
    for mount in mounts:
        inside = path == mount.point or path.startswith(mount.point.rstrip("/") + "/")
        if inside and (best is None or len(mount.point) >= len(best.point)):
            best = mount  # ">=": of two mounts on one point the later one is on top
    return best


def storage_kind(fstype: str) -> str:
    """LOCAL or NETWORK for a mount's filesystem type."""
    if fstype in NETWORK_FSTYPES:
        return NETWORK
    if (fstype == "fuse" or fstype.startswith("fuse.")) and fstype not in LOCAL_FUSE_FSTYPES:
        return NETWORK  # a FUSE daemon: s3fs, gcsfuse, juicefs, a volume client; each read is a round trip
    return LOCAL


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files vLLM loads from the folder: its top level, the first format present."""
    names = sorted(os.listdir(folder))
    for pattern in WEIGHT_FORMATS:
        chosen = fnmatch.filter(names, pattern)
        if chosen:
            return [Path(folder) / name for name in chosen]
    return []


def describe_storage(folder: str | Path, mount_table: str | None = None) -> WeightStorage:
    """The storage and weights of a model folder. mount_table: /proc/mounts' text (read here by default)."""
    files = weight_files(folder)
    # A Hugging Face snapshot's files are symlinks into its blobs/: the blobs' filesystem is what is read.
    where = os.path.realpath(files[0] if files else folder)
    if mount_table is None:
        try:
            mount_table = MOUNT_TABLE.read_text()
        except OSError:  # not Linux: nothing known, vLLM's defaults apply
            mount_table = ""
    mount = mount_of(where, parse_mounts(mount_table))
    fstype = mount.fstype if mount else ""
    return WeightStorage(
        kind=storage_kind(fstype) if mount else LOCAL,
        fstype=fstype,
        mount_point=mount.point if mount else "",
        files=tuple(file.name for file in files),
        bytes=sum(os.path.getsize(file) for file in files),
    )
