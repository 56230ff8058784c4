"""The package walls: every module imports, and imports point the way README's "How it works" draws.

Reads each module's own import statements (not what it pulls in transitively),
so a new import against the direction fails here with the module and the name.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import relay

ROOT = Path(relay.__file__).parent


def _modules() -> list[str]:
    # __main__ modules run their program when imported
    return sorted(info.name for info in pkgutil.walk_packages([str(ROOT)], prefix="relay.")
                  if not info.name.endswith("__main__"))


def _imports(module: str) -> set[str]:
    """Absolute names a module imports, type-checking-only imports included."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


MODULES = _modules()


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


# Who may import what. Stages are pure (pipeline alone reaches the store, through
# `relay.store.outbox` and the queue's public methods); the store knows nothing of
# HTTP; only the server speaks aiohttp.web; tools and commands sit on top.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("relay.stages", ("aiohttp", "diskcache", "relay.server", "relay.delivery", "relay.commands", "relay.tools",
                      "relay.runtime")),
    ("relay.mapping", ("aiohttp", "diskcache", "relay.server", "relay.store", "relay.delivery", "relay.commands",
                       "relay.tools", "relay.runtime", "relay.stages.pipeline")),
    ("relay.store", ("aiohttp", "relay.server", "relay.stages", "relay.mapping", "relay.delivery", "relay.commands",
                     "relay.tools", "relay.runtime")),
    ("relay.delivery", ("aiohttp.web", "diskcache", "relay.server", "relay.stages", "relay.mapping",
                        "relay.commands", "relay.tools", "relay.runtime")),
    ("relay.rejections", ("aiohttp", "diskcache", "relay.server", "relay.delivery", "relay.commands", "relay.tools",
                          "relay.runtime")),
    ("relay.server", ("diskcache", "relay.commands", "relay.tools")),
    ("relay.commands", ("diskcache", "relay.tools")),
    # the native protocols' decoders are pure: bytes in, records out; mapping and queue come after
    ("relay.stages.protocols", ("relay.stages.pipeline", "relay.store", "relay.mapping")),
]
CORE_MODULES = ("relay.errors", "relay.models", "relay.config", "relay.telemetry")


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_the_documented_way(module: str) -> None:
    imported = _imports(module)
    for package, forbidden in RULES:
        if not _under(module, package):
            continue
        if module == "relay.stages.pipeline":  # the one stage that commits to the queue
            forbidden = tuple(f for f in forbidden if f != "relay.store")
        bad = sorted(name for name in imported if _under(name, *forbidden))
        assert not bad, f"{module} imports {bad}, against the direction in README's 'How it works'"
    if _under(module, "relay.stages") and module != "relay.stages.pipeline":
        assert not [n for n in imported if _under(n, "relay.store", "relay.mapping")], module
    if not _under(module, "relay.server", "relay.tools"):  # tools are programs of their own (mock upstream)
        assert not [n for n in imported if _under(n, "aiohttp.web")], f"{module}: only relay.server builds web apps"
    if module in CORE_MODULES or not _under(module, "relay.tools"):
        assert not [n for n in imported if _under(n, "relay.tools")], f"{module}: the core never imports tools"
    if _under(module, "relay.store") and module != "relay.store.queue" and module != "relay.store.layout":
        assert "diskcache" not in imported, f"{module}: diskcache lives behind DiskQueue's methods"
