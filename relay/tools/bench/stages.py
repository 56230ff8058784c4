"""`python -m relay.tools.bench.stages`: CPU per entry of each ingest stage, in this process.

Runs the ingest path's pure part on pre-built 1,000-entry gzip bodies of the bench's
generated traffic (bench/workloads.py) and prints µs per entry for

    decompress   the gzip layer (relay.stages.compression)
    decode       body -> records (relay.stages.decode, or the native protocol's decoder for
                 es_bulk, splunk_hec, datadog; decompression excluded)
    map          records -> validated entries (the route's compiled mapping + Validator)
    typed        body bytes -> validated entries by the typed route (relay.stages.typed), for
                 a passthrough mapping: decode, map and validate in one (- for other mappings)
    shaped       body bytes -> validated entries by the mapping's record Struct (relay.mapping.shape:
                 only the keys it reads decoded) and its attribute-reading compiled twin
                 (- for a mapping with nested paths); `decode` + `map` is the dict path it replaces
    encode       entries -> the NDJSON lines the queue stores
    prepare      the whole of relay.stages.pipeline.prepare, as a request runs it

The machine is shared and noisy: every figure is the best of `--repeat` rounds, the
stages of one round run back to back on the same bodies, and a stage's time is taken
from `time.process_time` (this process's CPU, not the wall clock). Compare ratios
measured in one run; for steadier figures, run it under
`valgrind --tool=callgrind --callgrind-out-file=/dev/null` and count instructions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from relay.config import SourceConfig
from relay.mapping import MappingLibrary
from relay.models import Decoded, RecordContext
from relay.stages.compression import decompress
from relay.stages.decode import decode_body
from relay.stages.pipeline import Route, _encode_lines, prepare
from relay.stages.protocols import loki, otlp
from relay.stages.schema import ValidationPolicy, Validator
from relay.tools.bench.processes import PINNED_NOW
from relay.tools.bench.protocol_bodies import loki_bodies, otlp_bodies
from relay.tools.bench.workloads import PROTOCOL_WORKLOADS, build_bodies, workload

MAPPINGS = {"passthrough": "profound", "fluentbit": "fluentbit-nginx", "ndjson": "profound",
            "es_bulk": "fluentbit-nginx", "splunk_hec": "fluentbit-nginx", "datadog": "fluentbit-nginx",
            "otlp": "otel", "loki": "loki-nginx"}
# native protocols: (body builder, decoder, Content-Encoding of the bodies, Content-Type)
PROTOCOLS: dict[str, tuple[Callable[[int, int], Any], Callable[..., Any], str | None, str]] = {
    "otlp": (otlp_bodies, otlp.decode, "gzip", "application/x-protobuf"),
    "loki": (loki_bodies, loki.decode, None, "application/x-protobuf"),
}
STAGES = ("decompress", "decode", "map", "typed", "shaped", "encode", "prepare")
MAX_SIZE = 64 * 1024 * 1024


def route_for(name: str) -> Route:
    """The route a workload posts to, its clock pinned to the generated traffic's day."""
    mapping = MAPPINGS[name]
    now = datetime.fromisoformat(PINNED_NOW.replace("Z", "+00:00")).timestamp()
    protocol = PROTOCOL_WORKLOADS[name][2] if name in PROTOCOL_WORKLOADS else name if name in PROTOCOLS else "http"
    config = msgspec.convert({"mapping": mapping, "host": "www.example.com", "protocol": protocol}, SourceConfig)
    return Route(name, config, MappingLibrary().get(mapping), Validator(ValidationPolicy(now=now)), [])


def _best(func: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        func()
        best = min(best, time.process_time() - start)
    return best


def measure(name: str, *, bodies: int = 20, repeat: int = 5) -> dict[str, float]:
    """µs per entry of each stage for `bodies` bodies of workload `name`, best of `repeat`."""
    if name in PROTOCOLS:
        return measure_protocol(name, bodies=bodies, repeat=repeat)
    load = workload(name)
    route = route_for(name)
    raw = list(build_bodies(load, bodies))
    encoding = "gzip" if load.gzip else None
    plain = [decompress(body, encoding, MAX_SIZE) for body in raw]
    path = load.path

    def decode(body: bytes) -> Decoded:
        if route.decode is not None:  # a native protocol's decoder, as prepare calls it
            return route.decode(body, content_type=load.content_type, path=path, max_size=MAX_SIZE)
        return decode_body(body, content_type=load.content_type, content_encoding=None, max_size=MAX_SIZE)

    records = [decode(body).records for body in plain]
    ctx_args: dict[str, Any] = {"content_type": load.content_type, "content_encoding": encoding, "headers": {},
                                "max_size": MAX_SIZE, "path": path}
    ctx = RecordContext(source=name, host=route.config.host)
    # prepare lets its entries go once encoded: the ones to encode come from the mapper
    entries = [route.mapper.map_records(batch, ctx, route.validator).entries for batch in records]
    typed, lines = route.typed, load.content_type != "application/json"
    shape, mapper = route.mapper.shape, route.mapper

    def shaped() -> Any:
        if shape is None:
            return None
        return [mapper.map_records(shape.decode(body, lines=lines) or [], ctx, route.validator, shaped=True)
                for body in plain]
    stages: dict[str, Callable[[], Any]] = {
        "decompress": lambda: [decompress(body, encoding, MAX_SIZE) for body in raw],
        "decode": lambda: [decode(body) for body in plain],
        "map": lambda: [route.mapper.map_records(batch, ctx, route.validator) for batch in records],
        "typed": lambda: [typed.entries(body, lines=lines, validator=route.validator) for body in plain]
        if typed is not None else None,
        "shaped": shaped,
        "encode": lambda: [_encode_lines(batch) for batch in entries],
        "prepare": lambda: [prepare(route, body, **ctx_args) for body in raw],
    }
    count = bodies * load.per_body
    out = {stage: _best(func, repeat) * 1e6 / count for stage, func in stages.items()}
    if typed is None:
        out["typed"] = float("nan")
    if shape is None:
        out["shaped"] = float("nan")
    out["entries"] = float(sum(len(batch) for batch in entries) / bodies)
    return out


def measure_protocol(name: str, *, bodies: int = 20, repeat: int = 5, per_body: int = 1000) -> dict[str, float]:
    """decompress / decode / map / encode / prepare for a native protocol's bodies (its decoder, then
    its preset); prepare is relay.stages.pipeline.prepare on the compressed body, as a request runs it."""
    build, decode, encoding, content_type = PROTOCOLS[name]
    route = route_for(name)
    raw = list(build(per_body, bodies))
    plain = [decompress(body, encoding, MAX_SIZE) for body in raw]
    records = [decode(body, content_type=content_type, path="").records for body in plain]
    ctx = RecordContext(source=name, host=route.config.host)
    mapped = [route.mapper.map_records(batch, ctx, route.validator) for batch in records]
    assert all(not result.rejections for result in mapped), mapped[0].rejections[:3]
    entries = [result.entries for result in mapped]
    stages: dict[str, Callable[[], Any]] = {
        "decompress": lambda: [decompress(body, encoding, MAX_SIZE) for body in raw],
        "decode": lambda: [decode(body, content_type=content_type, path="") for body in plain],
        "map": lambda: [route.mapper.map_records(batch, ctx, route.validator) for batch in records],
        "encode": lambda: [_encode_lines(batch) for batch in entries],
        "prepare": lambda: [prepare(route, body, content_type=content_type, content_encoding=encoding, headers={},
                                    max_size=MAX_SIZE) for body in raw],
    }
    count = bodies * per_body
    out = {stage: _best(func, repeat) * 1e6 / count for stage, func in stages.items()}
    out["typed"] = out["shaped"] = float("nan")
    out["entries"] = float(sum(len(batch) for batch in entries) / bodies)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.tools.bench.stages", description=__doc__.split("\n")[0])
    parser.add_argument("--workload", action="append", choices=sorted(MAPPINGS), help="default: passthrough and fluentbit")
    parser.add_argument("--bodies", type=int, default=20, help="1,000-entry bodies a round (default 20)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is reported (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {name: measure(name, bodies=args.bodies, repeat=args.repeat)
               for name in args.workload or ["passthrough", "fluentbit"]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'µs/entry':<12}" + "".join(f"{stage:>12}" for stage in STAGES))
    for name, figures in results.items():
        print(f"{name:<12}" + "".join(f"{figures[stage]:>12.2f}" for stage in
                                      STAGES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
