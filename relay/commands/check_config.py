"""`relay check-config`: validate the config and every mapping, print the plan."""

from __future__ import annotations

import argparse
import sys

from relay.config import DEFAULT_CONFIG_PATH, Config, load
from relay.errors import ConfigError
from relay.mapping import MappingLibrary
from relay.routes import compile_routes
from relay.store import disk_usage


def plan(config_path: str) -> tuple[list[str], list[str]]:
    """The lines describing what each source does, and the warnings."""
    config = load(config_path)
    library = MappingLibrary(config.mappings, file=config.file)
    routes = compile_routes(config, library=library)  # what `relay serve` compiles, unbound to a queue
    lines = [f"config {config.file}: OK", ""]
    warnings: list[str] = []
    seen: set[str] = set()
    for _path, route in sorted(routes.items(), key=lambda item: item[1].name):
        if route.name in seen:
            continue
        seen.add(route.name)
        paths = [p for p, r in routes.items() if r is route]
        sinks = [outbox.name for outbox in route.outboxes]
        if route.protocol == "http":
            lines.append(f"source {route.name}: POST {' and '.join(sorted(paths))}")
        else:  # README "Native protocols": its paths at the root (the token picks among sources) and under these
            lines.append(f"source {route.name}: protocol {route.protocol}, at its root paths and under "
                         f"{' and '.join(sorted(paths))}")
        if route.tokens:
            lines.append(f"  auth:    {len(route.tokens)} token(s)")
        elif route.config.allow_anonymous:
            lines.append("  auth:    none: any client (allow_anonymous)")
            warnings.append(f"sources.{route.name}: allow_anonymous = true and no tokens: anyone who can reach "
                            f"{config.server.address} can write into the upstream account")
        else:
            lines.append("  auth:    none: loopback clients only (set tokens, or allow_anonymous = true)")
        lines.append(f"  mapping: {route.config.mapping}")
        lines.extend("    " + line for line in library.describe(route.config.mapping).splitlines())
        if route.config.host:
            lines.append(f"  host:    {route.config.host!r} when the logs carry none")
        host_warning = route.mapper.host_warning(route.name, route.config.host)
        if host_warning:
            warnings.append(host_warning)
        lines.append(f"  sinks:   {', '.join(sinks)}")
    lines.append("")
    for name, sink in config.sinks.items():
        lines.append(f"sink {name}: POST {sink.url}, batches of <= {sink.batch_max_entries} entries or "
                     f"{sink.batch_timeout:g}s, {sink.compression}, {sink.concurrency} in flight")
    lines.append(f"queue: {config.queue.path}, at most {config.queue.max_size} bytes, sync = {config.queue.sync}")
    lines.append(workers_line(config))
    q = config.queue
    warnings += disk_usage.capacity_problems(q.path, q.max_size, q.min_free_space, 4 * config.server.max_body_size)
    return lines, warnings


def workers_line(config: Config) -> str:
    """How many processes `relay serve` starts, and for "auto" what it counted."""
    count = config.worker_count
    why = f" (auto: {config.auto_reason()})" if config.server.workers == "auto" else ""
    if count == 1:
        return f"workers: 1 process on {config.server.address}{why}"
    return (f"workers: {count} processes on {config.server.address}{why} (SO_REUSEPORT), each with its own queue "
            f"shard of at most {config.queue.max_size // count} bytes (shard 0: queue.path, shard i: "
            "queue.path/shard-<i>)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")


def run(args: argparse.Namespace) -> int:
    try:
        lines, warnings = plan(args.config)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
