"""`relay dead-letter replay --remap` with the relay stopped: it opens the queue directory itself."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from relay.commands import dead_letter
from relay.store import originals
from relay.store.layout import BatchRef, DeadLetter
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore
from relay.tools.local_config import relay_toml, sink_toml
from tests.unit.rejections.test_remap import record

SOURCE = '[sources.web]\nkeep_records = true\nhost = "www.example.com"\n'


def test_offline_remap_queues_what_maps_and_stores_what_is_rejected(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(relay_toml(port=1, queue_dir=tmp_path / "queue", now="2026-11-25T09:30:00Z", sources=SOURCE,
                                 sinks=sink_toml("up", "http://127.0.0.1:9/v1/logs/custom", "k")))

    async def letters() -> None:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        queue.open()
        for n, rec in ((1, record(0)), (2, record(1, status_code=999))):
            stem = f"b/up/{n:020d}"
            letter = DeadLetter(1, b'{"path":"wrong"}\n', "upstream answered 400", 400, 0.0,
                                originals.pack("web", None, [rec]))
            await queue.replace_batch(BatchRef(f"{stem}.1.1", 1, 1), [(stem, letter)], [])
        queue.close()

    asyncio.run(letters())
    args = argparse.Namespace(action="replay", config=str(config), sink=None, json=False, remap=True)
    assert dead_letter.run(args) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {k: answer[k] for k in ("letters", "remapped", "rejected", "resent")} == {
        "letters": 2, "remapped": 1, "rejected": 1, "resent": 0}

    async def after() -> tuple[int, int, int]:
        queue = DiskQueue(str(tmp_path / "queue"), max_size=2**30, sync="normal")
        found = queue.open()["up"]
        store = RejectedStore(queue, 2**20)
        await store.load()
        queue.close()
        return sum(ref.count for ref in found.inbox), len(found.dead), store.records.get("web", 0)

    assert asyncio.run(after()) == (1, 0, 1)
