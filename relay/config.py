"""Typed configuration: the only reader of config files.

A config is one TOML (or YAML) file. `${VAR}` and `${VAR:-default}` in any
string are replaced from the environment before the values are typed, so
secrets never sit in the file. Sizes ("16MiB") and durations ("500ms", "30s")
are strings. Every error names the file and the dotted key at fault.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from relay import cores
from relay.errors import ConfigError
from relay.stages.schema import DEFAULT_MAX_AGE, DEFAULT_MAX_FUTURE
from relay.store.queue import DEFAULT_MIN_FREE_SPACE

DEFAULT_CONFIG_PATH = "configs/relay.toml"
DEFAULT_ADDRESS = "0.0.0.0:8080"
DEFAULT_MAX_BODY_SIZE = 16 * 2**20
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_QUEUE_PATH = "data/queue"
DEFAULT_QUEUE_MAX_SIZE = 4 * 2**30
DEFAULT_UPSTREAM_URL = "https://artemis.api.tryprofound.com/v1/logs/custom"
MAX_BATCH_ENTRIES = 1000  # the upstream's hard limit per request
MAX_WORKERS = 64
# Resident memory measured under `relay bench` flat out (docs/performance.md): a worker peaks at
# ~75 MiB besides its bodies in flight, the supervisor (it serves nothing) idles at ~33 MiB.
WORKER_MEMORY = 96 * 2**20
SUPERVISOR_MEMORY = 48 * 2**20


class Size(int):
    """A byte count written as "16MiB", "512KB", "1GiB" or a plain integer."""


class Duration(float):
    """Seconds, written as "500ms", "30s", "5m", "1h", "7d" or a plain number."""


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
               "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20,
               "gib": 2**30, "tib": 2**40}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def parse_size(text: str | int) -> Size:
    if isinstance(text, int):
        return Size(text)
    match = _QUANTITY.match(text)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(f"invalid size {text!r}: write it like \"16MiB\", \"512KB\" or \"1GiB\"")
    return Size(int(float(match.group(1)) * unit))


def parse_duration(text: str | float) -> Duration:
    if isinstance(text, (int, float)):
        return Duration(text)
    match = _QUANTITY.match(text)
    unit = match and _DURATION_UNITS.get(match.group(2) or "s")
    if not match or unit is None:
        raise ValueError(f"invalid duration {text!r}: write it like \"500ms\", \"30s\", \"5m\" or \"1h\"")
    return Duration(float(match.group(1)) * unit)


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Size and isinstance(value, (str, int)):
        return parse_size(value)
    if type_ is Duration and isinstance(value, (str, int, float)):
        return parse_duration(value)
    raise NotImplementedError


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: an unknown key is an error, never ignored."""


class ServerConfig(_Section):
    address: str = DEFAULT_ADDRESS
    max_body_size: Size = Size(DEFAULT_MAX_BODY_SIZE)  # compressed and decompressed
    max_body_memory: Size = Size(128 * 2**20)  # bodies held at once; more wait their turn
    read_timeout: Duration = Duration(DEFAULT_READ_TIMEOUT)
    shutdown_grace: Duration = Duration(DEFAULT_SHUTDOWN_GRACE)
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_token: str | None = None
    # Worker processes sharing the port (SO_REUSEPORT), each with its own queue shard; "auto" (the
    # default) is one per usable core (Config.worker_count). 1: one process, no supervisor.
    workers: int | Literal["auto"] = "auto"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


class QueueConfig(_Section):
    path: str = DEFAULT_QUEUE_PATH
    max_size: Size = Size(DEFAULT_QUEUE_MAX_SIZE)
    sync: Literal["full", "normal"] = "full"
    dead_letter_max_size: Size = Size(256 * 2**20)  # oldest dead letters are dropped past this
    rejected_max_size: Size = Size(64 * 2**20)  # rejected records kept for replay; oldest dropped past this; 0: none
    min_free_space: Size = Size(DEFAULT_MIN_FREE_SPACE)  # refuse new data (503) when the disk has less free
    # when not one item of a damaged queue database can be read: start with an empty queue (the
    # damaged file is kept in queue.path/damaged/), or exit naming the file
    on_unreadable: Literal["start_empty", "exit"] = "start_empty"


class ValidationConfig(_Section):
    on_invalid: Literal["repair", "reject"] = "repair"
    max_age: Duration = Duration(DEFAULT_MAX_AGE)
    max_future: Duration = Duration(DEFAULT_MAX_FUTURE)
    now: str | None = None  # pin the clock (ISO 8601) for tests and replays of old logs


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


PROTOCOLS = ("http", "elasticsearch", "splunk_hec", "otlp", "loki", "datadog")
Protocol = Literal["http", "elasticsearch", "splunk_hec", "otlp", "loki", "datadog"]


class SourceConfig(_Section):
    path: str | None = None  # served in addition to /ingest/<name>; a protocol's paths go under it
    protocol: Protocol = "http"  # the wire protocol its clients speak (README "Native protocols")
    mapping: str = "profound"
    tokens: list[str] = []
    allow_anonymous: bool = False  # without tokens: True answers any client, False only loopback ones
    sinks: list[str] | None = None  # None: every sink
    host: str | None = None  # for formats that carry no virtual host
    tag_header: str | None = None  # request header holding the shipper's tag (Fluent Bit header_tag)
    # keep each entry's original record in the queue, so dead letters can be re-mapped (costs disk and CPU)
    keep_records: bool = False

    def __post_init__(self) -> None:
        # `host = "${RELAY_DEFAULT_HOST:-}"` with the variable unset means no host, not a host ""
        if self.host is not None and not self.host.strip():
            self.host = None


class SinkConfig(_Section, kw_only=True):
    url: str = DEFAULT_UPSTREAM_URL
    api_key: str
    batch_max_entries: int = MAX_BATCH_ENTRIES
    batch_timeout: Duration = Duration(1.0)
    compression: Literal["gzip", "none"] = "gzip"
    compression_level: int = 1
    concurrency: int = 4
    request_timeout: Duration = Duration(30.0)
    retry_initial_backoff: Duration = Duration(0.5)
    retry_max_backoff: Duration = Duration(30.0)
    # While upstream is down one probe at a time goes: cheap for upstream, so it can go
    # often, and the backlog resumes within this of recovery (not within retry_max_backoff).
    probe_interval: Duration = Duration(1.0)


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    validation: ValidationConfig = msgspec.field(default_factory=ValidationConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    sources: dict[str, SourceConfig] = {}
    sinks: dict[str, SinkConfig] = {}
    mappings: dict[str, dict[str, Any]] = {}
    file: str | None = None  # where it was read from; not a config key

    @property
    def worker_count(self) -> int:
        """server.workers resolved: "auto" is one per usable core (relay/cores.py), at most MAX_WORKERS,
        no more than leave each shard room for four bodies, so that a config valid on a small
        machine stays valid on a big one (a shard gets queue.max_size / workers), and no more
        than fit in the cgroup's memory limit (`memory_fit`)."""
        if self.server.workers != "auto":
            return self.server.workers
        fit = self.queue.max_size // (4 * self.server.max_body_size)
        return max(1, min(cores.usable(), MAX_WORKERS, fit, self.memory_fit(cores.memory_limit())))

    def auto_reason(self) -> str:
        """What "auto" counted, for check-config and the supervisor's log: `2 usable cores`, and why fewer."""
        usable, limit = cores.usable(), cores.memory_limit()
        count = self.worker_count
        why = f"{usable} usable core{'s' if usable != 1 else ''}"
        if count < min(usable, MAX_WORKERS) and count == max(1, self.memory_fit(limit)) and limit is not None:
            why += (f", fewer so that they fit the cgroup's memory limit of {limit // 2**20} MiB: about "
                    f"{(WORKER_MEMORY + self.server.max_body_memory) // 2**20} MiB a worker with its "
                    "server.max_body_memory of bodies")
        elif count < min(usable, MAX_WORKERS):
            why += ", fewer so that each queue shard holds four bodies of server.max_body_size"
        elif count < usable:
            why += f", at most {MAX_WORKERS}"
        return why

    def memory_fit(self, limit: int | None) -> int:
        """Workers that fit in `limit` bytes: the supervisor, then per worker a relay at full load
        (WORKER_MEMORY) and its server.max_body_memory of bodies in flight. MAX_WORKERS without one."""
        if limit is None:
            return MAX_WORKERS
        return int((limit - SUPERVISOR_MEMORY) // (WORKER_MEMORY + self.server.max_body_memory))

    def source_sinks(self, name: str) -> list[str]:
        chosen = self.sources[name].sinks
        return list(self.sinks) if chosen is None else chosen


def expand_env(value: Any, env: dict[str, str], key: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a parsed config tree."""
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set "
                          f"(write ${{{name}:-default}} to give a default)", key=key)

    return _ENV_REF.sub(substitute, value)


def _read_tree(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            tree = yaml.safe_load(text) or {}
        else:
            tree = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse: {exc}", file=str(path)) from None
    if not isinstance(tree, dict):
        raise ConfigError("the top level must be a table of sections", file=str(path))
    return tree


def _key_of(error: msgspec.ValidationError) -> tuple[str | None, str]:
    """Turn msgspec's "... - at `$.sinks.a.concurrency`" into ("sinks.a.concurrency", "...")."""
    message = str(error)
    message, _, where = message.partition(" - at `")
    key = where.rstrip("`").removeprefix("$").lstrip(".") or None
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        field = unknown.group(1)
        return (f"{key}.{field}" if key else field), "unknown key"
    return key, message[0].lower() + message[1:] if message else message


# Sections that are tables of named entries, whose errors msgspec reports as `[...]`.
_TABLES: dict[str, type[_Section]] = {"sources": SourceConfig, "sinks": SinkConfig}


def _locate(tree: dict[str, Any], error: msgspec.ValidationError) -> tuple[str | None, str]:
    """msgspec writes `$.sinks[...].x` for dict entries: find which entry, to name it."""
    key, message = _key_of(error)
    section = (key or "").split("[", 1)[0]
    if key and "[...]" in key and section in _TABLES and isinstance(tree.get(section), dict):
        for name, value in tree[section].items():
            try:
                msgspec.convert(value, _TABLES[section], dec_hook=_dec_hook)
            except msgspec.ValidationError as inner:
                sub_key, message = _key_of(inner)
                return f"{section}.{name}" + (f".{sub_key}" if sub_key else ""), message
    return key, message


def load(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", file=str(path))
    tree = _read_tree(path)
    try:
        tree = expand_env(tree, dict(os.environ) if env is None else env)
    except ConfigError as exc:
        raise ConfigError(exc.message, key=exc.key, file=str(path)) from None
    tree.pop("file", None)
    try:
        config = msgspec.convert(tree, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        key, message = _locate(tree, exc)
        raise ConfigError(message, key=key, file=str(path)) from None
    config.file = str(path)
    check(config)
    return config


_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check(config: Config) -> None:
    """Rules that types alone cannot say. Raises ConfigError naming the key."""
    file = config.file

    def fail(key: str, message: str) -> None:
        raise ConfigError(message, key=key, file=file)

    try:
        _ = config.server.host_port  # parses the address; raises on a bad one
    except ValueError:
        fail("server.address", f"expected host:port, got {config.server.address!r}")
    if (config.server.tls_cert is None) != (config.server.tls_key is None):
        fail("server.tls_cert", "tls_cert and tls_key must be set together")
    if not config.sinks:
        fail("sinks", "at least one [sinks.NAME] is needed")
    if not config.sources:
        fail("sources", "at least one [sources.NAME] is needed")
    paths: dict[str, str] = {}
    for name, source in config.sources.items():
        if not _SOURCE_NAME.match(name):
            fail(f"sources.{name}", "a source name may hold only letters, digits, '.', '_' and '-'")
        for sink in source.sinks or []:
            if sink not in config.sinks:
                fail(f"sources.{name}.sinks", f"no sink named {sink!r} (sinks: {', '.join(config.sinks)})")
        if source.sinks == []:
            fail(f"sources.{name}.sinks", "an empty list routes nowhere; leave it out to use every sink")
        for route in filter(None, [f"/ingest/{name}", source.path]):
            if not route.startswith("/"):
                fail(f"sources.{name}.path", f"must start with '/', got {route!r}")
            if route in paths:
                fail(f"sources.{name}.path", f"{route} is already served by source {paths[route]!r}")
            paths[route] = name
        if any(not token for token in source.tokens):
            fail(f"sources.{name}.tokens", "a token may not be empty")
    for name, sink_config in config.sinks.items():
        if not 1 <= sink_config.batch_max_entries <= MAX_BATCH_ENTRIES:
            fail(f"sinks.{name}.batch_max_entries", f"must be 1..{MAX_BATCH_ENTRIES}, got {sink_config.batch_max_entries}")
        if sink_config.concurrency < 1:
            fail(f"sinks.{name}.concurrency", "must be at least 1")
        if sink_config.probe_interval <= 0:
            fail(f"sinks.{name}.probe_interval", "must be more than 0")
        if not sink_config.url.startswith(("http://", "https://")):
            fail(f"sinks.{name}.url", f"must be an http:// or https:// URL, got {sink_config.url!r}")
        if not sink_config.api_key:
            fail(f"sinks.{name}.api_key", "is empty")
        if not 0 <= sink_config.compression_level <= 3:
            fail(f"sinks.{name}.compression_level", "must be 0..3 (the isal gzip levels)")
    if config.server.workers != "auto" and not 1 <= config.server.workers <= MAX_WORKERS:
        fail("server.workers", f"must be 1..{MAX_WORKERS} or \"auto\" (one per core), got {config.server.workers}")
    if config.server.max_body_memory < config.server.max_body_size:
        fail("server.max_body_memory", "must be at least server.max_body_size")
    if config.server.max_body_size > 512 * 2**20:
        fail("server.max_body_size", "must be at most 512MiB")
    if config.queue.max_size < 4 * config.server.max_body_size * config.worker_count:
        fail("queue.max_size", "must hold at least four bodies of server.max_body_size"
             + (" per worker (each worker's shard gets max_size / server.workers)"
                if config.worker_count > 1 else ""))


# ---- what a reload changes ------------------------------------------------------------------

# Keys a reload cannot apply: the listening socket, its worker processes and its TLS files, aiohttp's body limit and
# keep-alive (fixed when the server is built), the queue's files. Changing one refuses the reload.
RESTART_ONLY = ("server.address", "server.workers", "server.tls_cert", "server.tls_key", "server.max_body_size",
                "server.read_timeout", "queue.path", "queue.sync")
_SECRET = ("server.admin_token",)  # named when changed, its value never shown
_SETTINGS = ("server", "queue", "validation", "log")


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, float):  # a Duration: seconds
        return f"{value:g}"
    if isinstance(value, int):  # a Size: bytes
        return str(int(value))
    return msgspec.json.encode(value).decode()


def changed_settings(old: Config, new: Config) -> list[tuple[str, str]]:
    """(dotted key, how to say it) for every key of [server], [queue], [validation] and [log]
    that differs, in the order of the sections and their keys."""
    changed = []
    for section in _SETTINGS:
        before, after = getattr(old, section), getattr(new, section)
        for field in after.__struct_fields__:
            value = getattr(after, field)
            if getattr(before, field) != value:
                key = f"{section}.{field}"
                changed.append((key, f"{key} changed" if key in _SECRET else f"{key} = {_shown(value)}"))
    return changed


def changed_entries(section: str, old: dict[str, Any], new: dict[str, Any], verb: str = "changed") -> list[str]:
    """`sources.NAME added`, `... removed`, `... changed (tokens, host)` for a table of named entries."""
    out = [f"{section}.{name} removed" for name in old if name not in new]
    for name, entry in new.items():
        if name not in old:
            out.append(f"{section}.{name} added")
        elif old[name] != entry:
            if isinstance(entry, msgspec.Struct):
                fields = [f for f in entry.__struct_fields__ if getattr(old[name], f) != getattr(entry, f)]
                out.append(f"{section}.{name} {verb} ({', '.join(fields)})")
            else:
                out.append(f"{section}.{name} {verb}")
    return out
