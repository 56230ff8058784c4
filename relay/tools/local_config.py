"""The config of a relay started on loopback by our own programs and tests: `relay bench`, the e2e harness.

One writer, so that a key renamed in relay/config.py breaks one place, and the bench measures
the relay the end-to-end tests check. The text keeps one `key = value` a line, which tests
edit in place (a reload, a shrunken queue), so its spelling is part of the contract here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The two sources the bench's workloads and the e2e tests send to: Fluent Bit's nginx records
# on /ingest/fluentbit, and upstream-form entries on the upstream's own path.
DEFAULT_SOURCES = """\
[sources.fluentbit]
mapping = "fluentbit-nginx"
host = "www.example.com"

[sources.custom]
path = "/v1/logs/custom"
mapping = "profound"
"""


def toml_value(value: Any) -> str:
    """A TOML scalar or list of scalars: JSON spells strings, numbers, booleans and arrays the same way."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


def sink_toml(name: str, url: str, api_key: str, **options: Any) -> str:
    """`[sinks.NAME]` with its url, key and further keys (`batch_timeout="200ms"`...)."""
    lines = [f"[sinks.{name}]", f"url = {toml_value(url)}", f"api_key = {toml_value(api_key)}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def relay_toml(*, port: int, queue_dir: Path, sinks: str, now: str | None = None, sync: str = "normal",
               sources: str | None = None, extra: str = "", queue_max_size: str = "1GiB",
               max_body_size: str | None = None, shutdown_grace: str = "10s", log_level: str | None = None,
               admin_token: str | None = None, workers: int | str | None = None) -> str:
    """A whole config listening on 127.0.0.1:`port`, queueing in `queue_dir`.

    `sinks`: the [sinks.*] tables (see sink_toml); `sources` replaces DEFAULT_SOURCES; `extra` is
    further TOML put before the sinks; `now` pins the validation clock (for dated fixture traffic)."""
    server = [f"address = {toml_value(f'127.0.0.1:{port}')}", f"shutdown_grace = {toml_value(shutdown_grace)}"]
    if max_body_size:
        server.append(f"max_body_size = {toml_value(max_body_size)}")
    if admin_token:
        server.append(f"admin_token = {toml_value(admin_token)}")
    if workers is not None:
        server.append(f"workers = {toml_value(workers)}")
    sections = [
        "[server]\n" + "\n".join(server) + "\n",
        "[queue]\n" + "\n".join([f"path = {toml_value(queue_dir)}", f"max_size = {toml_value(queue_max_size)}",
                                 f"sync = {toml_value(sync)}"]) + "\n",
    ]
    if now:
        sections.append(f"[validation]\nnow = {toml_value(now)}\n")
    if log_level:
        sections.append(f"[log]\nlevel = {toml_value(log_level)}\n")
    sections.append(DEFAULT_SOURCES if sources is None else sources)
    if extra:
        sections.append(extra)
    sections.append(sinks)
    return "\n".join(section if section.endswith("\n") else section + "\n" for section in sections)
