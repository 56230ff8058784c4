"""`relay rejected list|replay`: records the mapping refused, and mapping them again after a fix.

As `relay dead-letter`: with the relay running, this asks it over its admin endpoints (it holds
the store's index and the route table); with it stopped, it opens the queue directory itself and
uses the config file as it is now. The queue directory's lock tells which. A queue written by
several workers (`server.workers`) has a store per shard: offline, every shard on disk is read
(and replayed into its own shard); online, the relay answers for all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from typing import Any

import msgspec

from relay.commands import admin_client
from relay.config import DEFAULT_CONFIG_PATH, Config
from relay.errors import ConfigError, IngestError
from relay.models import Rejection
from relay.rejections.merge import merge_listings, merge_replays
from relay.rejections.recent import RecentRejections
from relay.rejections.redact import config_secrets, scrub
from relay.rejections.replay import replay
from relay.routes import compile_routes
from relay.store import shards
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, unpack_record


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")
    parser.add_argument("--source", help="only this source")
    parser.add_argument("--limit", type=int, default=100, help="list at most this many (newest first)")
    parser.add_argument("--json", action="store_true", help="list as JSON")


async def _offline_shard(config: Config, shard: int, action: str, names: list[str], limit: int) -> Any:
    queue = DiskQueue(shards.shard_path(config.queue.path, shard), max_size=config.queue.max_size,
                      sync=config.queue.sync)
    snapshot = queue.open(lock=shard != 0)  # the caller holds shard 0's lock
    try:
        store = RejectedStore(queue, config.queue.rejected_max_size)
        await store.load()
        if action == "list":
            return await _listing(store, names, limit)
        # what maps now is queued in this shard: its worker (or the one adopting it) delivers it
        outboxes = {name: Outbox(name, snapshot.get(name)) for name in config.sinks}
        routes = {route.name: route for route in compile_routes(config, outboxes).values()}
        results = [await replay(routes[name], store, queue) for name in names if store.records.get(name)]
        return merge_replays([msgspec.to_builtins(one) for one in results])
    finally:
        queue.close()  # writes what is pending first


async def _offline(config: Config, action: str, source: str | None, limit: int) -> Any:
    """Every shard on disk, however many workers wrote the queue, merged into one answer."""
    if source is not None and source not in config.sources:
        raise KeyError(f"no source named {source!r} (sources: {', '.join(config.sources) or 'none'})")
    names = [source] if source else list(config.sources)
    parts = [await _offline_shard(config, shard, action, names, limit)
             for shard in [0, *shards.existing(config.queue.path)]]
    return merge_listings(parts, limit) if action == "list" else merge_replays(parts)


async def _listing(store: RejectedStore, names: list[str], limit: int) -> Any:
    """One shard's stored records in the answer's shape (what the relay's memory held is gone with it)."""
    ring = RecentRejections(max_records=max(limit, 1), max_bytes=2**62)
    for name in names:
        for _, item in await store.read((await store.keys(name))[-limit:] if limit > 0 else []):
            rejection = Rejection(item.index, item.field, item.reason, item.message)
            ring.capture(name, [(rejection, unpack_record(item))], now=item.time)
    return {"rejections": json.loads(msgspec.json.encode(ring.recent(None, limit))),  # records are msgspec.Raw
            "stored": {name: {"records": store.records.get(name, 0), "bytes": store.bytes_by_source.get(name, 0),
                              "dropped": 0} for name in names}}


def _online(config: Config, action: str, source: str | None, limit: int) -> Any:
    query: dict[str, str] = {"source": source} if source else {}
    if action == "list":
        query["limit"] = str(limit)
    return admin_client.call(config, "/-/rejections" + ("/replay" if action == "replay" else ""), query,
                             post=action == "replay", timeout=120)


def _print_list(answer: dict[str, Any]) -> None:
    rejections = answer["rejections"]
    if not rejections:
        print("no rejected records")
        return
    for item in rejections:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item["time"]))
        where = f"$[{item['index']}]" + (f".{item['field']}" if item["field"] else "")
        print(f"{when}Z  source={item['source']}  {where}  {item['reason']}: {item['message']}")
        print(f"  {json.dumps(item['record'])[:300]}")
    stored = sum(figures["records"] for figures in answer.get("stored", {}).values())
    print(f"{len(rejections)} shown; {stored} stored for replay; after fixing the mapping or `host` "
          "(and a reload), `relay rejected replay` maps them again")


def run(args: argparse.Namespace) -> int:
    config = admin_client.load_config(args.config)
    if config is None:
        return 2
    try:
        answer = admin_client.offline_or_online(
            config, lambda: _offline(config, args.action, args.source, args.limit),
            lambda: _online(config, args.action, args.source, args.limit))
    except (KeyError, ConfigError) as exc:
        print(f"relay: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    except IngestError as exc:
        print(f"relay: {exc.message}", file=sys.stderr)
        return 1
    if args.action == "list" and not args.json:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            _print_list(answer)
        text = out.getvalue()
    else:
        text = json.dumps(answer, indent=2) + "\n"
    # offline, nobody scrubbed the answer: configured credentials never reach the terminal
    sys.stdout.write(scrub(text.encode(), config_secrets(config)).decode())
    return 0
