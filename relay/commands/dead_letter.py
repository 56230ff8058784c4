"""`relay dead-letter list|replay`: what upstream refused, and sending it again.

With the relay running, this asks it over its admin endpoints (so its
in-memory queue state stays right); with it stopped, it works on the queue
directory directly. The queue directory's lock tells which. A queue written by
several workers (`server.workers`) has one store per shard: offline, every
shard is read; online, the relay answers for all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import msgspec

from relay.commands import admin_client
from relay.config import DEFAULT_CONFIG_PATH, Config
from relay.rejections.remap import add_up, remap
from relay.routes import compile_routes
from relay.store import shards
from relay.store.deadletters import DeadLetters
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")
    parser.add_argument("--sink", help="only this sink")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    parser.add_argument("--remap", action="store_true",
                        help="replay: re-map letters that kept their records with the current mapping")


async def _offline_shard(config: Config, shard: int, action: str, sink: str | None,
                         remap_letters: bool = False) -> Any:
    queue = DiskQueue(shards.shard_path(config.queue.path, shard), max_size=config.queue.max_size,
                      sync=config.queue.sync)
    snapshot = queue.open(lock=shard != 0)  # the caller holds shard 0's lock
    try:
        outboxes = {name: Outbox(name, found) for name, found in snapshot.items()}
        if sink is not None and sink not in outboxes and sink in config.sinks:
            outboxes[sink] = Outbox(sink)  # a configured sink with nothing in this shard
        store = DeadLetters(queue, outboxes, config.queue.dead_letter_max_size)
        if action == "list":
            # plain JSON values (msgspec.to_builtins cannot take the raw JSON entries)
            return msgspec.json.decode(msgspec.json.encode(await store.list(sink)))
        if remap_letters:
            rejected = RejectedStore(queue, config.queue.rejected_max_size)
            await rejected.load()
            for name in config.sinks:  # a configured sink with no letters yet
                outboxes.setdefault(name, Outbox(name))
            routes = {route.name: route for route in compile_routes(config, outboxes).values()}
            return msgspec.to_builtins(await remap(store, routes, rejected, sink))
        return {"entries": await store.replay(sink)}
    finally:
        queue.close()


async def _offline(config: Config, action: str, sink: str | None, remap_letters: bool = False) -> Any:
    several = [0, *shards.existing(config.queue.path)]  # every shard on disk, however many workers wrote it
    parts = {shard: await _offline_shard(config, shard, action, sink, remap_letters) for shard in several}
    if action == "replay":
        return add_up(list(parts.values()))
    if len(several) == 1:
        return {"dead_letters": parts[0]}
    return {"dead_letters": [{**letter, "worker": shard} for shard, letters in parts.items() for letter in letters]}


def _online(config: Config, action: str, sink: str | None, remap_letters: bool = False) -> Any:
    query = {"sink": sink} if sink else {}
    if remap_letters:
        query["remap"] = "1"
    return admin_client.call(config, "/-/dead-letters" + ("/replay" if action == "replay" else ""), query,
                             post=action == "replay", timeout=30)


def _print_list(answer: dict[str, Any]) -> None:
    letters = answer["dead_letters"]
    if not letters:
        print("no dead letters")
        return
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter["failed_at"]))
        print(f"{letter['key']}  sink={letter['sink']}  entries={letter['count']}  at {when}Z")
        print(f"  reason: {letter['reason']}")
        if letter.get("records"):
            print("  original records kept: `relay dead-letter replay --remap` maps them again")
        for entry in letter["entries"][:3]:
            print(f"  {json.dumps(entry)[:200]}")
    print(f"{sum(letter['count'] for letter in letters)} entries in {len(letters)} dead letters; "
          "`relay dead-letter replay` sends them again")


def run(args: argparse.Namespace) -> int:
    config = admin_client.load_config(args.config)
    if config is None:
        return 2
    try:
        answer = admin_client.offline_or_online(
            config, lambda: _offline(config, args.action, args.sink, args.remap),
            lambda: _online(config, args.action, args.sink, args.remap))
    except KeyError as exc:
        print(f"relay: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.action == "list" and not args.json:
        _print_list(answer)
    else:
        print(json.dumps(answer, indent=2))
    return 0
