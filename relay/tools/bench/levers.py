"""`python -m relay.tools.bench.levers`: the mapping levers of issue 11 measured one by one, in this process.

The same records (the bench's generated bodies of a workload) go through every variant of
the route's compiled mapping, in turn, round after round, so a busy machine slows them
alike; each figure is the best round, in µs of this process's CPU per entry:

    dict decode         body -> dicts (relay.stages.decode), as before the record Struct
    shaped decode       body -> the mapping's record Struct (relay.mapping.shape)
    dict, check()       dict records, Validator.check called per record (as before fused.py)
    dict, fused         dict records, check's fast path inline (relay.mapping.fused)
    shaped, check()     Struct records, check called per record
    shaped, fused       Struct records, fast path inline: what `prepare` runs now

A mapping with nested paths has no Struct: its shaped rows are left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from relay.mapping.codegen import compile_spec
from relay.models import RecordContext
from relay.stages.compression import decompress
from relay.stages.decode import decode_data
from relay.tools.bench.stages import MAPPINGS, MAX_SIZE, route_for
from relay.tools.bench.workloads import build_bodies, workload


def measure(name: str, *, bodies: int = 20, rounds: int = 15) -> dict[str, float]:
    load = workload(name)
    route = route_for(name)
    mapper, validator = route.mapper, route.validator
    encoding = "gzip" if load.gzip else None
    plain = [decompress(body, encoding, MAX_SIZE) for body in build_bodies(load, bodies)]
    kind, lines = ("json", False) if load.content_type == "application/json" else ("lines", True)
    ctx = RecordContext(source=name, host=route.config.host)
    dicts = [decode_data(kind, body).records for body in plain]
    runs: dict[str, Callable[[], Any]] = {}
    variants: list[tuple[str, dict[str, str] | None, list[Any]]] = [("dict", None, dicts)]
    shape = mapper.shape
    if shape is not None:
        variants.append(("shaped", shape.attrs, [shape.decode(body, lines=lines) or [] for body in plain]))
    for label, attrs, records in variants:
        for fuse in (False, True):
            batch = compile_spec(mapper.spec, attrs, fuse=fuse)[0]

            def mapped(batch: Any = batch, records: list[Any] = records) -> None:
                for batch_records in records:
                    validator.begin()
                    batch(batch_records, ctx, validator.check, {}, validator.fast_parts())

            runs[f"{label}, {'fused' if fuse else 'check()'}"] = mapped
    runs["dict decode"] = lambda: [decode_data(kind, body) for body in plain]
    if shape is not None:
        runs["shaped decode"] = lambda: [shape.decode(body, lines=lines) for body in plain]
    for warm in runs.values():  # fill every memo before the clock starts, whatever runs first
        warm()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for label, step in runs.items():
            start = time.process_time()
            step()
            best[label] = min(best[label], time.process_time() - start)
    count = sum(len(records) for records in dicts)
    return {label: seconds * 1e6 / count for label, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.tools.bench.levers", description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="fluentbit", choices=sorted(MAPPINGS))
    parser.add_argument("--bodies", type=int, default=20, help="1,000-entry bodies a round (default 20)")
    parser.add_argument("--rounds", type=int, default=15, help="the best round is reported (default 15)")
    args = parser.parse_args(argv)
    for label, figure in measure(args.workload, bodies=args.bodies, rounds=args.rounds).items():
        print(f"{args.workload:<12} {label:<18} {figure:7.2f} µs/entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
