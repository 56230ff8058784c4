"""The peers `relay bench --peer` runs in the relay's place: where their binary is, their config, how to start them.

A peer is the tool a user would run instead of the relay (Fluent Bit, Vector), set up to
do the same job: take the load generator's JSON bodies over HTTP, buffer them on disk,
send them gzipped to the same lean upstream sink. Its config is written to the turn's
work dir; its CPU and RSS are read from /proc like the relay's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from relay.tools.bench.processes import (
    API_KEY,
    Child,
    Run,
    _free_port,
    _wait,
    start_upstream,
)


class Peer(msgspec.Struct, frozen=True):
    name: str  # as given to --peer, and the row's name in the table
    program: str  # the binary's name on PATH
    env: str  # the variable that names the binary, checked first


PEERS = {
    "fluent-bit": Peer("fluent-bit", "fluent-bit", "FLUENT_BIT_BIN"),
    "vector": Peer("vector", "vector", "VECTOR_BIN"),
}

# Fluent Bit's nginx parser names, renamed to the upstream API's, as the relay's
# fluentbit-nginx mapping does (Fluent Bit keeps the values as strings; nothing types them).
_FLUENT_BIT_RENAMES = (("date", "timestamp"), ("remote", "ip"), ("code", "status_code"),
                       ("agent", "user_agent"), ("size", "bytes_sent"))


def find_binary(peer: Peer, environ: Mapping[str, str] = os.environ) -> tuple[Path | None, str]:
    """(the binary, how it was found) or (None, why there is none).

    The variable wins outright: when it names nothing the peer is skipped, so a run can
    be told not to use a binary that is on PATH. Nothing outside the package and PATH is
    searched: in a development checkout, `make bench-peer` names the peer binary."""
    named = environ.get(peer.env)
    if named:
        path = Path(named)
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute(), peer.env  # the peer runs in the bench's work dir: a relative name would miss
        return None, f"{peer.env}={named} is not an executable file"
    found = shutil.which(peer.program, path=environ.get("PATH", ""))
    if found:
        return Path(found).absolute(), "PATH"
    return None, f"no {peer.program} binary: {peer.env} unset and none on PATH"


def version(binary: Path) -> str:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def fluent_bit_config(workdir: Path, port: int, upstream_url: str, workload: str, workers: int) -> str:
    """Classic-format config: in_http -> out_http, the input's chunks on disk in workdir."""
    host_port, _, uri = upstream_url.removeprefix("http://").partition("/")
    host, _, upstream_port = host_port.rpartition(":")
    renames = ""
    if workload == "fluentbit":  # its records in the parser's names: map them as the relay does
        lines = [f"    rename {old} {new}" for old, new in _FLUENT_BIT_RENAMES]
        renames = "\n".join(["[FILTER]", "    name modify", "    match *", *lines,
                             "    remove user", "    set host www.example.com", ""]) + "\n"
    return textwrap.dedent(f"""\
        [SERVICE]
            flush        1
            grace        5
            log_level    warn
            storage.path {workdir / 'fluent-bit-storage'}
            storage.sync normal

        [INPUT]
            name              http
            listen            127.0.0.1
            port              {port}
            storage.type      filesystem
            buffer_max_size   64M
            buffer_chunk_size 1M

        """) + renames + textwrap.dedent(f"""\
        [OUTPUT]
            name          http
            match         *
            host          {host}
            port          {upstream_port}
            uri           /{uri}
            header        x-api-key {API_KEY}
            format        json
            json_date_key false
            compress      gzip
            workers       {workers}
            retry_limit   no_limits
        """)


def fluent_bit_settings(workers: int, workload: str) -> str:
    renamed = "; a modify filter renames the parser's fields to the upstream names" if workload == "fluentbit" else ""
    return (f"in_http (storage.type filesystem, storage.sync normal, answers 201) -> out_http (format json, "
            f"json_date_key false, compress gzip, workers {workers}, retry_limit no_limits), flush 1s{renamed}. "
            f"It answers before the data is on disk and neither validates nor types fields")


def vector_config(workdir: Path, port: int, upstream_url: str, workload: str, workers: int) -> str:
    """What Vector would run: http_server -> http sink with a disk buffer, acknowledging end to end."""
    return textwrap.dedent(f"""\
        data_dir = "{workdir / 'vector-data'}"

        [schema]
        log_namespace = true  # the event is the posted object itself, no added keys

        [sources.ingest]
        type = "http_server"
        address = "127.0.0.1:{port}"
        decoding.codec = "json"  # a JSON array body: one event per element
        framing.method = "bytes"

        [sinks.upstream]
        type = "http"
        inputs = ["ingest"]
        uri = "{upstream_url}"
        method = "post"
        compression = "gzip"
        encoding.codec = "json"
        framing.method = "character_delimited"
        framing.character_delimited.delimiter = ","
        payload_prefix = "["
        payload_suffix = "]"
        request.headers.x-api-key = "{API_KEY}"
        request.concurrency = {workers}
        buffer.type = "disk"
        buffer.max_size = 1073741824
        buffer.when_full = "block"
        acknowledgements.enabled = true
        """)


def vector_settings(workers: int, workload: str) -> str:
    return (f"http_server (json) -> http sink (json array, gzip, disk buffer, end-to-end acknowledgements, "
            f"request.concurrency {workers})")


_CONFIGS: dict[str, tuple[str, Callable[..., str], Callable[[int, str], str]]] = {
    "fluent-bit": ("fluent-bit.conf", fluent_bit_config, fluent_bit_settings),
    "vector": ("vector.toml", vector_config, vector_settings),
}


def config(peer: Peer, workdir: Path, port: int, upstream_url: str, workload: str, workers: int) -> str:
    return _CONFIGS[peer.name][1](workdir, port, upstream_url, workload, workers)


def settings(peer: Peer, workers: int, workload: str) -> str:
    """One line for the table's footnote: what the peer was set to do."""
    return _CONFIGS[peer.name][2](workers, workload)


def start_peer(run: Run, peer: Peer, binary: Path) -> None:
    """Start the upstream, then the peer in the relay's place (run.subject must be peer.name)."""
    start_upstream(run)
    port = _free_port()
    path = run.workdir / _CONFIGS[peer.name][0]
    path.write_text(config(peer, run.workdir, port, run.upstream_base + "/v1/logs/custom", run.args.workload,
                           run.args.peer_workers))
    argv = ["-c", str(path)] if peer.name == "fluent-bit" else ["--quiet", "--config", str(path)]
    child = run.children[peer.name] = Child(peer.name, argv, run.workdir, executable=str(binary))
    run.relay_base = f"http://127.0.0.1:{port}"
    _wait(f"{peer.name} port {port}", child, lambda: _accepts(port), timeout=30)


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
