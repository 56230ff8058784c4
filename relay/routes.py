"""A config's sources compiled into routes: path -> Route, each with its mapping and validator.

What `relay serve` runs (relay.runtime builds and reloads it) and what the offline commands
(check-config, dead-letter and rejected replays) compile the same way, without a running relay.
"""

from __future__ import annotations

from datetime import datetime

from relay.config import Config
from relay.errors import ConfigError
from relay.mapping import MappingLibrary
from relay.stages.pipeline import Route
from relay.stages.schema import ValidationPolicy, Validator
from relay.store.outbox import Outbox


def validation_policy(config: Config) -> ValidationPolicy:
    v = config.validation
    now = None
    if v.now:
        try:
            now = datetime.fromisoformat(v.now).timestamp()
        except ValueError:
            raise ConfigError(f"expected an ISO 8601 time, got {v.now!r}", key="validation.now",
                              file=config.file) from None
    return ValidationPolicy(on_invalid=v.on_invalid, max_age=float(v.max_age),
                            max_future=float(v.max_future), now=now)


def compile_routes(config: Config, outboxes: dict[str, Outbox] | None = None, *,
                   library: MappingLibrary | None = None, validator: Validator | None = None) -> dict[str, Route]:
    """Path -> Route for every source; compiles each mapping (ConfigError names the source).

    `outboxes` None binds each route to a placeholder outbox per sink: what check-config shows,
    and what a relay holds before its queue is open. Pass `library` to compile each mapping once
    across calls (and to describe them after)."""
    if library is None:
        library = MappingLibrary(config.mappings, file=config.file)
    if validator is None:
        validator = Validator(validation_policy(config))
    if outboxes is None:
        outboxes = {name: Outbox(name) for name in config.sinks}
    routes: dict[str, Route] = {}
    for name, source in config.sources.items():
        try:
            mapper = library.get(source.mapping)
        except ConfigError as exc:
            if exc.key and exc.key.startswith("mappings."):
                raise
            raise ConfigError(exc.message, key=f"sources.{name}.mapping", file=config.file) from None
        try:
            route = Route(name, source, mapper, validator,
                          [outboxes[sink] for sink in config.source_sinks(name) if sink in outboxes],
                          [token.encode() for token in source.tokens])
        except ModuleNotFoundError:
            raise ConfigError(f"protocol {source.protocol!r} is not available in this build",
                              key=f"sources.{name}.protocol", file=config.file) from None
        for path in filter(None, [f"/ingest/{name}", source.path]):
            routes[path] = route
    return routes
