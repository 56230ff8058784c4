"""The dead-letter store on real queues: letters taken in from another store (a shard adopted
after a restart with fewer workers) are kept as they were, under ids of this store's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.store import originals
from relay.store.deadletters import DeadLetters, read_dead, read_raw
from relay.store.layout import BatchRef, DeadLetter, batch_id
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue


async def letter(queue: DiskQueue, outbox: Outbox, entry: bytes, kept: bytes | None = None) -> None:
    """A refused one-entry batch, under an id its outbox gave, as the dispatcher makes it."""
    stem = f"b/up/{outbox.reserve_batch():020d}"
    value = DeadLetter(1, entry + b"\n", "upstream answered 400", 400, 1.5, kept)
    _, dead = await queue.replace_batch(BatchRef(f"{stem}.1.1", 1, 1), [(stem, value)], [])
    outbox.dead.extend(dead)


def test_letters_taken_in_keep_their_content_under_new_ids_and_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        other = DiskQueue(str(tmp_path / "shard-1"), max_size=2**30, sync="normal")
        theirs = Outbox("up", other.open().get("up"))
        kept = originals.pack("web", "t", [{"path": "/r"}])
        await letter(other, theirs, b'{"path":"/a"}', kept)
        await letter(other, theirs, b'{"path":"/b"}')

        queue = DiskQueue(str(tmp_path / "own"), max_size=2**30, sync="normal")
        mine = Outbox("up", queue.open().get("up"))
        await letter(queue, mine, b'{"path":"/own"}')  # the same id as the first of theirs
        store = DeadLetters(queue, {"up": mine}, 2**20)
        before = queue.used_bytes
        taken = await read_raw(other, list(theirs.dead))
        await store.take_in(mine, taken)
        assert store.entries("up") == 3
        assert len({batch_id(ref.key) for ref in mine.dead}) == 3  # no id used twice
        assert queue.used_bytes == before + sum(len(raw) for _, raw in taken)
        listed = await store.list("up")
        assert sorted(bytes(e) for view in listed for e in view.entries) == \
            [b'{"path":"/a"}', b'{"path":"/b"}', b'{"path":"/own"}']
        assert [view.records for view in listed if bytes(view.entries[0]) == b'{"path":"/a"}'] == [True]
        queue.close()
        other.close()

        reopened = DiskQueue(str(tmp_path / "own"), max_size=2**30, sync="normal")
        again = Outbox("up", reopened.open().get("up"))
        assert len(again.dead) == 3
        letters = [await read_dead(reopened, ref) for ref in again.dead]
        assert sorted(x.entries for x in letters if x is not None) == \
            [b'{"path":"/a"}\n', b'{"path":"/b"}\n', b'{"path":"/own"}\n']
        assert any(x is not None and x.originals == kept and x.failed_at == 1.5 for x in letters)
        reopened.close()

    asyncio.run(main())
