"""`relay rejected list|replay`: records the mapping refused, and mapping them again after a fix.

As `relay dead-letter`: with the relay running, this asks it over its admin endpoints (it holds
the store's index and the route table); with it stopped, it opens the queue directory itself and
uses the config file as it is now. The queue directory's lock tells which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import msgspec

from relay.config import DEFAULT_CONFIG_PATH, Config, load
from relay.errors import ConfigError, IngestError
from relay.models import Rejection
from relay.rejections.recent import RecentRejections
from relay.rejections.redact import config_secrets, scrub
from relay.rejections.replay import ReplayResult, replay
from relay.runtime import compile_routes
from relay.store.outbox import Outbox
from relay.store.queue import DiskQueue
from relay.store.rejected import RejectedStore, unpack_record


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")
    parser.add_argument("--source", help="only this source")
    parser.add_argument("--limit", type=int, default=100, help="list at most this many (newest first)")
    parser.add_argument("--json", action="store_true", help="list as JSON")


async def _offline(config: Config, action: str, source: str | None, limit: int) -> Any:
    if source is not None and source not in config.sources:
        raise KeyError(f"no source named {source!r} (sources: {', '.join(config.sources) or 'none'})")
    queue = DiskQueue(config.queue.path, max_size=config.queue.max_size, sync=config.queue.sync)
    snapshot = queue.open(lock=False)  # the caller holds the lock
    try:
        store = RejectedStore(queue, config.queue.rejected_max_size)
        await store.load()
        names = [source] if source else list(config.sources)
        if action == "list":
            return await _listing(store, names, limit)
        outboxes = {name: Outbox(name, snapshot.get(name)) for name in config.sinks}
        routes = {route.name: route for route in compile_routes(config, outboxes).values()}
        total = ReplayResult()
        for name in names:
            if store.records.get(name):
                one = await replay(routes[name], store, queue)
                total.replayed += one.replayed
                total.accepted += one.accepted
                total.filtered += one.filtered
                total.still_rejected += one.still_rejected
                for reason, n in one.reasons.items():
                    total.reasons[reason] = total.reasons.get(reason, 0) + n
        return msgspec.to_builtins(total)
    finally:
        queue.close()  # writes what is pending first


async def _listing(store: RejectedStore, names: list[str], limit: int) -> Any:
    """The stored records in the answer's shape (what the relay's memory held is gone with it)."""
    ring = RecentRejections(max_records=max(limit, 1), max_bytes=2**62)
    for name in names:
        for _, item in await store.read((await store.keys(name))[-limit:] if limit > 0 else []):
            rejection = Rejection(item.index, item.field, item.reason, item.message)
            ring.capture(name, [(rejection, unpack_record(item))], now=item.time)
    return {"rejections": json.loads(msgspec.json.encode(ring.recent(None, limit))),  # records are msgspec.Raw
            "stored": {name: {"records": store.records.get(name, 0), "bytes": store.bytes_by_source.get(name, 0),
                              "dropped": 0} for name in names}}


def _online(config: Config, action: str, source: str | None, limit: int) -> Any:
    host, port = config.server.host_port
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    scheme = "https" if config.server.tls_cert else "http"
    query: dict[str, str] = {"source": source} if source else {}
    if action == "list":
        query["limit"] = str(limit)
    path = "/-/rejections" + ("/replay" if action == "replay" else "")
    url = f"{scheme}://{host}:{port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, method="POST" if action == "replay" else "GET")
    if config.server.admin_token:
        request.add_header("Authorization", f"Bearer {config.server.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"relay: {exc.code}: {exc.read().decode(errors='replace')}") from None
    except OSError as exc:
        raise SystemExit(f"relay: the relay holds {config.queue.path} but does not answer on "
                         f"{host}:{port}: {exc}") from None


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
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return 2
    probe = DiskQueue(config.queue.path, max_size=config.queue.max_size)
    if probe.lock():
        try:
            answer = asyncio.run(_offline(config, args.action, args.source, args.limit))
        except (KeyError, ConfigError) as exc:
            print(f"relay: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
            return 2
        except IngestError as exc:
            print(f"relay: {exc.message}", file=sys.stderr)
            return 1
        finally:
            probe.close()
    else:
        answer = _online(config, args.action, args.source, args.limit)
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
