import asyncio
from pathlib import Path

import pytest

from relay.config import load
from relay.errors import ConfigError
from relay.runtime import Runtime

CONFIG = """
[queue]
path = "{path}"
max_size = "1GiB"
dead_letter_max_size = "100MiB"

[sources.fb]
mapping = "fluentbit-nginx"
host = "www.example.com"

[sinks.up]
url = "http://127.0.0.1:9/v1/logs/custom"
api_key = "k"
"""


def test_each_worker_owns_its_shard_and_its_share_of_the_budgets(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(path=tmp_path / "queue"))
    config = load(path)
    alone = Runtime(config)
    assert alone.queue.path == str(tmp_path / "queue") and alone.queue.max_size == 2**30
    first, second = Runtime(config, 0, 2), Runtime(config, 1, 2)
    assert first.queue.path == str(tmp_path / "queue")  # a single process's queue is shard 0 as it stands
    assert second.queue.path == str(tmp_path / "queue" / "shard-1")
    assert first.queue.max_size == second.queue.max_size == 2**29
    assert second.dead_letters.max_bytes == 50 * 2**20
    assert second.queue.min_free_space == config.queue.min_free_space  # the volume's, not split


def test_a_reload_that_leaves_a_running_shard_less_than_four_bodies_is_refused(tmp_path: Path) -> None:
    """With workers = "auto" the new file alone would pass (auto would start one worker for it),
    but the two running workers stay until a restart: each shard must still hold four bodies."""
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(path=tmp_path / "queue"))
    runtime = Runtime(load(path), 0, 2)
    path.write_text(CONFIG.format(path=tmp_path / "queue").replace('max_size = "1GiB"', 'max_size = "100MiB"'))
    assert load(path).worker_count == 1
    with pytest.raises(ConfigError, match="each of the 2 running workers") as caught:
        asyncio.run(runtime.reload())
    assert caught.value.key == "queue.max_size"
    assert runtime.queue.max_size == 2**29 and runtime.last_reload.result == "refused"


def test_workers_split_sqlite_memory_so_n_shards_cost_what_one_queue_did(tmp_path: Path) -> None:
    """Page cache and mmap count in every worker's RSS: each of N gets 1/N (issue 11: all relay
    processes together under 300 MB, with a 1 GiB backlog)."""
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(path=tmp_path / "queue"))
    config = load(path)
    for workers in (1, 2):
        runtime = Runtime(config, workers - 1, workers)
        cache = runtime.queue.make_cache(runtime.queue.path)
        try:
            cache_kib = -int(cache._sql("PRAGMA cache_size").fetchone()[0])
            mmap = int(cache._sql("PRAGMA mmap_size").fetchone()[0])
        finally:
            cache.close()
        assert cache_kib * 1024 + mmap == pytest.approx(96 * 2**20 / workers, rel=0.01)
