"""The figures README's "Dead letters" gives for `keep_records`: CPU per entry of `prepare` with
the option off and on, and the bytes an inbox item stores per entry (as the queue writes it).

    .venv/bin/python scripts/originals-figures.py [--workload fluentbit|passthrough|ndjson] [--bodies N]

In-process: the best of several rounds of process CPU time (relay.tools.bench.stages' method),
so the figures compare ratios and do not depend much on what else the machine runs.
"""

from __future__ import annotations

import argparse
import time

from isal import igzip

from relay.stages.pipeline import Route, prepare
from relay.store.layout import InboxItem, encode
from relay.tools.bench.stages import MAX_SIZE, route_for
from relay.tools.bench.workloads import build_bodies, workload


def best(func: object, repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        func()  # type: ignore[operator]
        out = min(out, time.process_time() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="fluentbit")
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    load = workload(args.workload)
    off = route_for(args.workload)
    on = Route(off.name, off.config.__copy__(), off.mapper, off.validator, [])
    on.config.keep_records = True
    on.typed = None if on.config.keep_records else on.typed
    bodies = list(build_bodies(load, args.bodies))
    kw = {"content_type": load.content_type, "content_encoding": "gzip" if load.gzip else None, "headers": {},
          "max_size": MAX_SIZE}
    count = args.bodies * load.per_body
    for name, route in (("off", off), ("on", on)):
        cpu = best(lambda route=route: [prepare(route, body, **kw) for body in bodies], args.repeat)
        stored = 0
        for body in bodies:
            prepared = prepare(route, body, **kw)
            kept = prepared.originals
            item = InboxItem(len(prepared.result.entries), igzip.compress(prepared.lines, compresslevel=1), 0,
                             0.0, "gzip", igzip.compress(kept, compresslevel=1) if kept is not None else None)
            stored += len(encode(item))
        raw = sum(len(prepare(route, body, **kw).originals or b"") for body in bodies)
        print(f"keep_records={name:3}  prepare {cpu * 1e6 / count:6.2f} µs/entry  inbox item "
              f"{stored / count:6.1f} B/entry stored (originals {raw / count:6.1f} B/entry before compression)")


if __name__ == "__main__":
    main()
