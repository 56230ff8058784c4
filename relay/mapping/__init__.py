"""The mapping language: any access-log record shape -> upstream entries.

    library = MappingLibrary(config_mappings, file="relay.toml")
    mapper = library.get("fluentbit-nginx")          # compiled once, cached
    result = mapper.map_records(records, ctx, validator)

Modules, by concern: `paths` (source path syntax), `values` (coercion),
`timestamps` (every timestamp shape -> Unix seconds), `parsers` (url,
request_line, query, first_ip), `lines` (combined, common, alb, envoy),
`drop` (drop_if), `spec` (a mapping table checked into a MappingSpec),
`codegen` (a spec compiled into one batch function), `mapper` (the compiled
mapping), `presets` (the shipped library in `presets/*.toml`), `cli` (`relay map`).
"""

from __future__ import annotations

from typing import Any

from relay.errors import ConfigError
from relay.mapping.mapper import Mapper
from relay.mapping.presets import load_presets, preset_file
from relay.mapping.spec import MappingSpec, check_complete, merge, parse_spec

__all__ = ["Mapper", "MappingLibrary"]


class MappingLibrary:
    """The presets plus the config's `[mappings.*]` tables (a config mapping shadows a preset of the same name)."""

    def __init__(self, user_mappings: dict[str, dict[str, Any]] | None = None, *, file: str | None = None) -> None:
        self.file = file
        self.user = dict(user_mappings or {})
        self.presets = load_presets()
        self._cache: dict[str, Mapper] = {}

    def names(self) -> list[str]:
        return sorted(set(self.presets) | set(self.user))

    def get(self, name: str, *, source: str | None = None) -> Mapper:
        """The compiled mapper for `name`; ConfigError naming `sources.SOURCE.mapping` when there is none."""
        mapper = self._cache.get(name)
        if mapper is None:
            if name not in self.user and name not in self.presets:
                key = f"sources.{source}.mapping" if source else "mapping"
                raise ConfigError(
                    f"unknown mapping {name!r}: define [mappings.{name}] or use a preset: {', '.join(sorted(self.presets))}",
                    key=key, file=self.file,
                )  # fmt: skip
            spec = self._spec(name, user=name in self.user, seen=())
            check_complete(spec, file=self._where(name, user=name in self.user))
            mapper = self._cache[name] = Mapper(spec, "mapping" if name in self.user else "preset")
        return mapper

    def describe(self, name: str) -> str:
        return self.get(name).describe()

    def _where(self, name: str, *, user: bool) -> str | None:
        return self.file if user else preset_file(name)

    def _spec(self, name: str, *, user: bool, seen: tuple[str, ...]) -> MappingSpec:
        raw = self.user[name] if user else self.presets[name]
        file = self._where(name, user=user)
        spec = parse_spec(name, raw, file=file)
        if spec.extends is None:
            return spec
        parent = spec.extends
        key = f"mappings.{name}.extends"
        if parent in seen or (parent == name and not (user and parent in self.presets)):
            raise ConfigError(f"extends loops: {' -> '.join((*seen, name, parent))}", key=key, file=file)
        # a config mapping may extend the preset it shadows; otherwise config mappings come first
        parent_is_user = parent in self.user and parent != name
        if not parent_is_user and parent not in self.presets:
            raise ConfigError(
                f"extends unknown mapping {parent!r}: presets are {', '.join(sorted(self.presets))}", key=key, file=file
            )
        return merge(self._spec(parent, user=parent_is_user, seen=(*seen, name)), spec)
