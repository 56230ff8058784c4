"""Fan-out to the sibling workers: one relay seen whole from whichever worker answers.

With `server.workers = N`, a client's request reaches one worker (SO_REUSEPORT
picks it). Endpoints that must speak for the whole relay (`/metrics`,
`/readyz`, `/-/reload`, `/-/dead-letters`) ask every worker for its own part
and merge. Each worker serves its parts as *views* on a private unix socket,
queue.path/run/w<i>.sock (the directory is mode 0700: only the relay's own
user can connect, so the socket needs no token; a public endpoint checks its
caller before it fans out).

Plugging in a new endpoint (e.g. `/-/console/state`, `/-/rejections`):

    from relay.server import siblings

    @siblings.view("rejections")          # this worker's part, JSON-able; the query is the caller's
    async def local_rejections(runtime: Runtime, query: Mapping[str, str]) -> Any:
        return [...]

    async def handle(request):            # the public route
        answers = await request.app[siblings.SIBLINGS].everyone("rejections", request.query,
                                                                request.app[RUNTIME])
        # answers: one Answer per worker, in worker order, this one included (called directly);
        # a worker that did not answer within TIMEOUT has ok=False and says why in `error`.
        return reply(200, merge([a.value for a in answers if a.ok]))

With one worker, `everyone` just calls the local view: no socket, no merge cost.
Bounded: one request per sibling, at most TIMEOUT seconds each, in parallel.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web

from relay.errors import QueueError
from relay.store.shards import RUN_DIR

if TYPE_CHECKING:
    from relay.runtime import Runtime

log = logging.getLogger("relay")
TIMEOUT = 3.0  # seconds a sibling has to answer one view
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin
View = Callable[["Runtime", Mapping[str, str]], Awaitable[Any]]
VIEWS: dict[str, View] = {}
_json = msgspec.json.Encoder()


def view(name: str) -> Callable[[View], View]:
    """Register `fn` as this worker's part of `name`, served to siblings."""
    def register(fn: View) -> View:
        VIEWS[name] = fn
        return fn
    return register


class Answer(msgspec.Struct):
    worker: int
    ok: bool
    value: Any = None
    error: str | None = None


def run_dir(root: str) -> str:
    """queue.path/run, or (when that path is too long for a unix socket) a private directory in
    the temp dir named after it."""
    preferred = os.path.join(os.path.abspath(root), RUN_DIR)
    if len(os.path.join(preferred, "w000.sock")) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"relay-{os.getuid()}-{digest}")


class Siblings:
    def __init__(self, root: str, index: int, count: int) -> None:
        self.index, self.count = index, count
        self.dir = run_dir(root)
        self._runner: web.AppRunner | None = None

    def socket(self, worker: int) -> str:
        return os.path.join(self.dir, f"w{worker}.sock")

    async def start(self, runtime: Runtime) -> None:
        """Serve this worker's views on its socket (nothing to do with one worker)."""
        if self.count == 1:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if os.stat(self.dir).st_uid != os.getuid():  # a directory someone else made (in the temp dir)
            raise QueueError(f"{self.dir}, where the workers' sockets go, belongs to another user; "
                             "remove it, or give queue.path a shorter path")
        os.chmod(self.dir, 0o700)  # even if it was made earlier with another mode
        app = web.Application()

        async def serve_view(request: web.Request) -> web.Response:
            fn = VIEWS.get(request.match_info["name"])
            if fn is None:
                return web.Response(status=404)
            return web.Response(body=_json.encode(await fn(runtime, request.query)),
                                content_type="application/json")

        app.router.add_post("/view/{name:.+}", serve_view)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        path = self.socket(self.index)
        try:
            os.unlink(path)  # left by a worker that was killed
        except FileNotFoundError:
            pass
        await web.UnixSite(self._runner, path).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def ask(self, worker: int, name: str, query: Mapping[str, str]) -> Answer:
        try:
            connector = aiohttp.UnixConnector(path=self.socket(worker))
            timeout = aiohttp.ClientTimeout(total=TIMEOUT)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
                    session.post(f"http://worker/view/{name}", params=dict(query)) as response:
                if response.status != 200:
                    return Answer(worker, False, error=f"answered {response.status}")
                return Answer(worker, True, msgspec.json.decode(await response.read()))
        except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
            return Answer(worker, False, error=f"not answering ({exc.__class__.__name__}: {exc}); "
                                               "it may be restarting")

    async def everyone(self, name: str, query: Mapping[str, str], runtime: Runtime) -> list[Answer]:
        """Every worker's part of `name`, this one's included, in worker order."""
        async def local() -> Answer:
            return Answer(self.index, True, await VIEWS[name](runtime, query))

        asks = [local() if worker == self.index else self.ask(worker, name, query)
                for worker in range(self.count)]
        return list(await asyncio.gather(*asks))


SIBLINGS: web.AppKey[Siblings] = web.AppKey("siblings", Siblings)
