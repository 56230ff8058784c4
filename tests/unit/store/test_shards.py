import os
from pathlib import Path

from relay.store import disk_usage, shards


def test_shard_zero_is_the_queue_path_itself_so_a_single_process_queue_needs_no_move() -> None:
    assert shards.shard_path("/q", 0) == "/q"
    assert shards.shard_path("/q", 3) == os.path.join("/q", "shard-3")
    assert shards.share(10 * 2**30, 4) == 10 * 2**30 // 4


def test_shards_beyond_the_worker_count_go_to_worker_k_mod_n(tmp_path: Path) -> None:
    for k in (1, 2, 3, 5):
        (tmp_path / f"shard-{k}").mkdir()
    (tmp_path / "shard-x").mkdir()  # not a shard
    (tmp_path / "shard-01").mkdir()  # not how a shard is spelled
    (tmp_path / "damaged").mkdir()
    root = str(tmp_path)
    assert shards.existing(root) == [1, 2, 3, 5]
    assert shards.adopted(root, 0, 1) == [1, 2, 3, 5]  # one worker drains them all
    assert shards.adopted(root, 0, 2) == [2]
    assert shards.adopted(root, 1, 2) == [3, 5]  # shard 1 is worker 1's own
    assert shards.adopted(root, 0, 4) == []
    assert shards.adopted(root, 1, 4) == [5]
    assert shards.all_shards(root, 2) == [0, 1, 2, 3, 5]
    assert shards.existing(str(tmp_path / "absent")) == []


def test_shard_zero_budget_leaves_out_the_other_shards(tmp_path: Path) -> None:
    (tmp_path / "cache.db").write_bytes(b"x" * 8192)
    alone = disk_usage.allocated_bytes(str(tmp_path))
    (tmp_path / "shard-1").mkdir()
    (tmp_path / "shard-1" / "cache.db").write_bytes(b"y" * 65536)
    (tmp_path / "run").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "shard-2").mkdir()  # only queue.path's own entries are other shards
    (tmp_path / "sub" / "shard-2" / "f").write_bytes(b"z" * 65536)
    assert disk_usage.allocated_bytes(str(tmp_path)) - alone < 65536 + 3 * 4096  # shard-1 not counted
    assert disk_usage.allocated_bytes(str(tmp_path)) - alone >= 65536  # sub/shard-2 counted
    assert disk_usage.allocated_bytes(str(tmp_path / "shard-1")) >= 65536
