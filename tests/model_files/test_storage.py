"""Where the weights live and how they are read: storage classification from mount-table text, the loader
chosen for it (plain inputs, no engine), pre-sharded sets that are incomplete, and the emulated volume."""

from __future__ import annotations

import json
import os

import pytest

from config.settings import load_settings
from devtools.slow_volume import SlowVolume, fuse_unavailable_reason
from worker.model_files.storage import (
    LOCAL,
    NETWORK,
    WeightStorage,
    describe_storage,
    mount_of,
    parse_mounts,
    storage_kind,
)
from worker.startup.preshard import MANIFEST_NAME, is_complete, plan_preshard, preshard_key, preshard_root
from worker.startup.start_phases import StartPhases
from worker.startup.weight_loading import MIN_STREAM_BUFFER_BYTES, NETWORK_READ_CONCURRENCY, choose_weight_loading

# A RunPod pod's mount table (overlay root, the network volume as FUSE), with NFS, a nested local disk,
# rootless Docker's FUSE root and a path with a space added.
MOUNTS = """\
overlay / overlay rw,relatime,lowerdir=/var/lib/docker/l/A,upperdir=/var/lib/docker/u,workdir=/var/lib/docker/w 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
mfs#eu-ro-1.runpod.net:9421 /runpod-volume fuse rw,relatime,user_id=0,group_id=0,allow_other 0 0
/dev/nvme0n1p1 /workspace ext4 rw,relatime 0 0
10.0.0.5:/models /mnt/nfs nfs4 rw,relatime,vers=4.2 0 0
/dev/sdb1 /mnt/nfs/local-scratch xfs rw,relatime 0 0
fuse-overlayfs /rootless fuse.fuse-overlayfs rw,nodev 0 0
juicefs /mnt/jfs fuse.juicefs rw,relatime 0 0
/dev/sdc1 /mnt/my\\040models ext4 rw 0 0
"""


@pytest.mark.parametrize(
    "path, point, kind",
    [
        ("/runpod-volume/huggingface-cache/hub/models--a--b/blobs/x", "/runpod-volume", NETWORK),
        ("/opt/worker/baked-model/hub/x.safetensors", "/", LOCAL),
        ("/workspace/model", "/workspace", LOCAL),
        ("/mnt/nfs/llama/model.safetensors", "/mnt/nfs", NETWORK),
        ("/mnt/nfs/local-scratch/model.safetensors", "/mnt/nfs/local-scratch", LOCAL),  # nested: longest wins
        ("/mnt/nfsx/model", "/", LOCAL),  # a prefix of the name is not a parent folder
        ("/rootless/model", "/rootless", LOCAL),
        ("/mnt/jfs/model", "/mnt/jfs", NETWORK),
        ("/mnt/my models/m.safetensors", "/mnt/my models", LOCAL),
    ],
)
def test_mount_table_classification(path, point, kind):
    mount = mount_of(path, parse_mounts(MOUNTS))
    assert mount is not None and mount.point == point
    assert storage_kind(mount.fstype) == kind


def test_describe_storage_counts_the_weights_and_follows_snapshot_symlinks(tmp_path):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir(), snapshot.mkdir()
    for name, size in (("model-00001-of-00002.safetensors", 300), ("model-00002-of-00002.safetensors", 200)):
        (blobs / name).write_bytes(b"\0" * size)
        (snapshot / name).symlink_to(blobs / name)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "pytorch_model.bin").write_bytes(b"\0" * 999)  # vLLM loads safetensors first: not counted
    table = f"/dev/vda / ext4 rw 0 0\nmfs#volume {blobs} fuse rw 0 0\n"
    storage = describe_storage(snapshot, mount_table=table)
    assert (storage.kind, storage.mount_point, storage.bytes) == (NETWORK, str(blobs), 500)
    assert len(storage.files) == 2 and storage.is_safetensors
    assert storage.summary().startswith(f"storage=network (fuse at {blobs}) files=2 bytes=500")


def storage(kind: str = NETWORK, size: int = 2**30, files: tuple[str, ...] = ("model.safetensors",)) -> WeightStorage:
    return WeightStorage(kind=kind, fstype="fuse" if kind == NETWORK else "ext4", mount_point="/v", files=files, bytes=size)


def choose(store: WeightStorage, given: dict | None = None, *, ranks: int = 1, available: int = 64 * 2**30,
           streamer: bool = True, presharded: bool = False):
    return choose_weight_loading(store, given or {}, ranks_here=ranks, available_bytes=available,
                                 has_streamer=streamer, presharded=presharded)


def test_local_disk_keeps_vllms_default():
    assert choose(storage(LOCAL)).engine_args == {}


def test_network_storage_streams_in_parallel():
    loading = choose(storage(size=3 * 2**30))
    assert loading.engine_args == {
        "load_format": "runai_streamer",
        "model_loader_extra_config": {"concurrency": NETWORK_READ_CONCURRENCY, "memory_limit": 3 * 2**30},
    }
    assert loading.strategy.startswith("runai_streamer")


@pytest.mark.parametrize("given", [{"load_format": "auto"}, {"safetensors_load_strategy": "lazy"},
                                   {"model_loader_extra_config": {"concurrency": 4}}])
def test_an_explicit_loader_argument_always_wins(given):
    loading = choose(storage(), given)
    assert loading.engine_args == {} and loading.strategy.startswith("given: ")
    assert choose(storage(), given, presharded=True).engine_args == {}


def test_a_model_larger_than_host_memory_streams_through_a_bounded_buffer_per_rank():
    loading = choose(storage(size=100 * 2**30), ranks=2, available=64 * 2**30)
    assert loading.engine_args["model_loader_extra_config"]["memory_limit"] == 16 * 2**30  # half of 64 GiB / 2


def test_too_little_host_memory_falls_back_to_the_default(caplog):
    loading = choose(storage(size=100 * 2**30), ranks=8, available=MIN_STREAM_BUFFER_BYTES * 4)
    assert loading.engine_args == {}
    assert "loading with vLLM's default instead" in caplog.text


def test_without_the_streamer_package_vllms_prefetch_reads_files_side_by_side():
    assert choose(storage(), streamer=False).engine_args == {
        "safetensors_load_strategy": "prefetch", "safetensors_prefetch_num_threads": NETWORK_READ_CONCURRENCY}


def test_non_safetensors_weights_keep_the_default():
    assert choose(storage(files=("pytorch_model.bin",))).engine_args == {}


def test_presharded_sets_load_with_the_sharded_loaders():
    assert choose(storage(LOCAL), presharded=True).engine_args == {"load_format": "sharded_state"}
    assert choose(storage(), presharded=True).engine_args == {"load_format": "runai_streamer_sharded"}


def test_breakdown_names_the_storage_strategy_and_weight_seconds():
    phases = StartPhases()
    phases.add("model load", 1.5)
    phases.note("storage=network (fuse at /v) files=1 bytes=5 strategy=runai_streamer (concurrency 32)")
    assert phases.summary() == (
        "model load 1.5 s; storage=network (fuse at /v) files=1 bytes=5 strategy=runai_streamer (concurrency 32) "
        "weights_load_s=1.50"
    )


def test_an_incomplete_preshard_set_is_removed_and_rebuilt_not_loaded(tiny_model, tmp_path):
    settings = load_settings(model_name=str(tiny_model), model_cache_dir=str(tmp_path / "hub"), preshard=True)
    folder = preshard_root(settings) / preshard_key(settings, str(tiny_model), 2, 1)
    folder.mkdir(parents=True)
    for rank in (0, 1):
        (folder / f"model-rank-{rank}-part-0.safetensors").write_bytes(b"\0" * 100)
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": {
        "model-rank-0-part-0.safetensors": 100, "model-rank-1-part-0.safetensors": 100}}))
    assert is_complete(folder)
    plan = plan_preshard(settings, str(tiny_model), 2, 1, given={})
    assert plan.presharded and plan.model_path == str(folder)

    os.truncate(folder / "model-rank-1-part-0.safetensors", 40)  # a copy cut short
    plan = plan_preshard(settings, str(tiny_model), 2, 1, given={})
    assert not plan.presharded and plan.model_path == str(tiny_model)
    assert plan.pending is not None and plan.pending.folder == folder and not folder.exists()


def test_preshard_key_covers_what_makes_shards_differ(tiny_model, tmp_path):
    base = load_settings(model_name=str(tiny_model), model_cache_dir=str(tmp_path))
    keys = {
        preshard_key(base, str(tiny_model), 2, 1),
        preshard_key(base, str(tiny_model), 4, 1),
        preshard_key(base, str(tiny_model), 2, 2),
        preshard_key(load_settings(model_name=str(tiny_model), dtype="float16"), str(tiny_model), 2, 1),
        preshard_key(load_settings(model_name=str(tiny_model), quantization="fp8"), str(tiny_model), 2, 1),
    }
    assert len(keys) == 5


@pytest.mark.skipif(fuse_unavailable_reason() is not None, reason=f"no FUSE mount here: {fuse_unavailable_reason()}")
def test_emulated_volume_is_a_counted_read_only_network_mount(tiny_model, tmp_path):
    with SlowVolume(tiny_model, tmp_path / "volume", latency_ms=1) as volume:
        mounted = tmp_path / "volume"
        assert (mounted / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
        stats = volume.stats()
        assert stats.requests >= 1 and stats.bytes == (tiny_model / "model.safetensors").stat().st_size
        assert describe_storage(mounted).kind == NETWORK
        with pytest.raises(OSError):
            (mounted / "config.json").write_text("{}")
    assert not os.path.ismount(mounted)
