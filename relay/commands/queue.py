"""`relay queue check|salvage`: offline figures on a queue directory, and a copy of what is readable.

Run with the relay stopped (the directory's lock says so otherwise). `check`
reads without changing anything; `salvage` copies every readable item into a
fresh directory, which can then replace the damaged one as queue.path.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from relay.config import DEFAULT_CONFIG_PATH, load
from relay.errors import ConfigError
from relay.store import counts, salvage
from relay.store.damage import lost_figure
from relay.store.queue import DiskQueue


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="integrity, and items, entries and bytes per sink")
    check.add_argument("--full", action="store_true", help="PRAGMA integrity_check instead of quick_check")
    copy = sub.add_parser("salvage", help="copy every readable item into a fresh queue directory")
    copy.add_argument("destination", help="a new, empty directory")
    for command in (check, copy):
        command.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (for queue.path)")
        command.add_argument("--path", help="the queue directory (default: queue.path of the config)")


def _queue_path(args: argparse.Namespace) -> str:
    return str(args.path) if args.path else load(args.config).queue.path


def _in_use(path: str) -> bool:
    try:
        with open(os.path.join(path, "relay.lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def print_report(report: salvage.Report, queue_dir: str) -> None:
    print(f"database {report.path}: read in {report.seconds:.2f}s")
    if not report.readable:
        print(f"  unreadable: {report.how}")
        print(f"  lost: {lost_figure(counts.read(queue_dir))}")
        return
    if report.rebuilt_first_page:
        print("  first page (file header and schema) unreadable: read through a copy with it rebuilt")
    print("  integrity: " + ("ok" if not report.problems else f"DAMAGED ({len(report.problems)} problems, e.g. "
                              f"{report.problems[0]})"))
    for sink, kinds in sorted(report.sinks.items()):
        for kind, f in sorted(kinds.items()):
            print(f"  sink {sink or '?'}: {kind:<11} {f.items:>9,} items {f.entries:>11,} entries {f.bytes:>14,} bytes")
    print(f"  unreadable: {report.lost_items:,} items ({report.lost_entries:,} entries), "
          f"{report.bad_rowids:,} rowids that could not be read")
    if report.unknown_items:
        print(f"  missing inbox items (entries unknown): {report.unknown_items:,}")
    if report.lost_items or report.bad_rowids:
        print(f"  how counted: {report.how}")


def run(args: argparse.Namespace) -> int:
    try:
        path = _queue_path(args)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return 2
    if _in_use(path):
        print(f"relay queue: {path} is in use by a running relay; stop it first", file=sys.stderr)
        return 2
    make_cache = DiskQueue(path, max_size=2**62).make_cache  # how the queue makes its database
    if args.action == "check":
        report = salvage.read(os.path.join(path, salvage.DBNAME), full_check=args.full, make_cache=make_cache)
        print_report(report, path)
        return 1 if report.damaged else 0
    destination = str(args.destination)
    if os.path.exists(destination) and os.listdir(destination):
        print(f"relay queue: {destination} is not empty", file=sys.stderr)
        return 2
    fresh = DiskQueue(destination, max_size=2**62).make_cache(destination)
    # A first page to rebuild is rebuilt in a copy on the destination's volume, not the damaged one.
    copied = salvage.copy_into(os.path.join(path, salvage.DBNAME), fresh, make_cache, work_dir=destination)
    print_report(copied, path)
    kept = sum(f.entries for kinds in copied.sinks.values() for f in kinds.values())
    print(f"salvage: {kept:,} entries copied into {destination} in {copied.seconds:.2f}s; "
          f"{copied.lost_entries:,} entries could not be read")
    return 0 if copied.readable else 1
