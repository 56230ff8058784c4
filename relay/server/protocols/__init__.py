"""The server half of each wire protocol: the paths it serves, its handshakes, its answers.

A source's `protocol` names one module here (`http`, `elasticsearch`, ...) whose `PROTOCOL`
says, for a request path below the source's prefix (`/ingest/<name>`, its `path`) or, for
protocols whose clients cannot set a prefix, at the root:

- `match(method, subpath)`: "ingest" (the pipeline takes the body), a handshake name (answered
  here, without a token: clients probe before they send credentials), or None (not ours);
- `accepted(prepared)`: the answer after the durable commit, from the pipeline's result;
- `failed(exc)`: an IngestError as the protocol's clients read errors.

`resolve` finds the route for a request: an exact plain-HTTP path first, then the longest
source prefix whose protocol matches, then the protocols' root paths, where several sources of
one protocol may share the root and the token picks the source (server.auth.pick).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from relay.errors import IngestError

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared, Route


class Protocol:
    name = "http"
    at_root = False  # also served at the root paths (clients that cannot set a path prefix)

    def match(self, method: str, subpath: str) -> str | None:
        raise NotImplementedError

    async def handshake(self, kind: str, request: web.Request) -> web.Response:
        raise NotImplementedError

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        raise NotImplementedError

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        raise NotImplementedError


_LOADED: dict[str, Protocol] = {}


def protocol(name: str) -> Protocol:
    found = _LOADED.get(name)
    if found is None:
        found = _LOADED[name] = importlib.import_module(f"{__name__}.{name}").PROTOCOL
    return found


@dataclass
class Match:
    kind: str  # "ingest" or a handshake name
    protocol: Protocol
    candidates: list[Route]  # one, or every source of the protocol sharing a root path
    subpath: str


class Table:
    """A route table (path -> Route, as routes.compile_routes builds it) arranged for lookup."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.exact = {path: route for path, route in routes.items() if route.protocol == "http"}
        # longest prefix first, so /ingest/es-eu wins over a shorter prefix that is its start
        self.prefixes = sorted(((path.rstrip("/"), route) for path, route in routes.items()
                                if route.protocol != "http"), key=lambda item: -len(item[0]))
        self.roots: dict[str, list[Route]] = {}
        for route in {route.name: route for route in routes.values() if route.protocol != "http"}.values():
            if protocol(route.protocol).at_root:
                self.roots.setdefault(route.protocol, []).append(route)

    def resolve(self, method: str, path: str) -> Match | None:
        route = self.exact.get(path)
        if route is not None and method == "POST":
            return Match("ingest", protocol("http"), [route], "")
        for prefix, route in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                subpath = path[len(prefix):] or "/"
                kind = protocol(route.protocol).match(method, subpath)
                if kind is not None:
                    return Match(kind, protocol(route.protocol), [route], subpath)
        for name, routes in self.roots.items():
            kind = protocol(name).match(method, path)
            if kind is not None:
                return Match(kind, protocol(name), routes, path)
        return None


_TABLES: dict[int, Table] = {}


def table(routes: dict[str, Route]) -> Table:
    """The Table of a route dict, built once per dict (a reload swaps in a new dict)."""
    found = _TABLES.get(id(routes))
    if found is None or found.routes is not routes:
        _TABLES.clear()  # only the current table is ever looked up
        found = _TABLES[id(routes)] = Table(routes)
    return found
