"""The preset library: `relay/mapping/presets/*.toml`, one mapping per file, named by the file.

They ship inside the package (and are visible at `configs/mappings/`, a
symlink). A preset is written in the same language as a `[mappings.NAME]`
table, plus a `description`.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

from relay.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@functools.cache
def load_presets(directory: Path = PRESET_DIR) -> dict[str, dict[str, Any]]:
    """name -> raw mapping table, for every preset file."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            out[path.stem] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read preset: {exc}", file=str(path)) from None
    return out


def preset_file(name: str) -> str:
    return str(PRESET_DIR / f"{name}.toml")
