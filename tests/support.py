"""Harness for tests that run the real `relay` processes: no event loop, stdlib only.

    free_port()                  a TCP port free on 127.0.0.1 right now
    wait_until(predicate, ...)   bounded wait: the one way to wait for something
    http_request(url, ...)       one HTTP exchange -> HttpResponse, whatever the status
    Process(args, log_dir)       `python -m relay ARGS`, output to LOG_DIR/NAME.log
    MockUpstream(tmp_dir)        `relay mock-upstream` on a free port, recording to a file
    FIXTURES                     the shipper request fixtures (tests/fixtures, or $RELAY_FIXTURES)
    fluent_bit_binary()          the optional real Fluent Bit, or None (with PEER_MISSING to skip)

Every process writes stdout and stderr to its own log file, appended across
restarts; `log_text()` / `log_tail()` give it to a failing assertion.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
# The one place tests find fixtures: in the repository, so a clone needs nothing beside it.
FIXTURES = Path(os.environ.get("RELAY_FIXTURES") or REPO_ROOT / "tests" / "fixtures")
# The only thing from outside the repository a test may use: a real Fluent Bit to check
# configs against, where one is installed. Tests that need it skip with this reason.
PEER_MISSING = ("needs a Fluent Bit binary (4.x): set FLUENT_BIT_BIN, put fluent-bit on PATH, "
                "or place it at ../shared/peers/fluent-bit beside the repository")
DEFAULT_TIMEOUT = 30.0  # seconds, for waits on processes and HTTP exchanges (a process starts in ~1 s; a loaded 2-core machine has taken over 10)
T = TypeVar("T")

# Never through a proxy from the environment: every test server is local.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fluent_bit_binary() -> Path | None:
    """A runnable Fluent Bit: $FLUENT_BIT_BIN, else `fluent-bit` on PATH, else ../shared/peers/."""
    import shutil

    named = os.environ.get("FLUENT_BIT_BIN")
    candidates = [named] if named else [shutil.which("fluent-bit"),
                                        str(REPO_ROOT.parent / "shared" / "peers" / "fluent-bit")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def process_tree(pid: int) -> list[int]:
    """pid and its descendants: the supervisor and every worker (the kernel's own children lists)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:  # exited meanwhile
                pass
    return pids


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Exceptions of the `ignore` types count as "not yet". On timeout, raise
    AssertionError with `message` (called, if callable, so it can show a log).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            suffix = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s: {text}{suffix}")
        time.sleep(interval)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    gzip: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> HttpResponse:
    """One exchange. `body`: bytes as they are, anything else as JSON; `gzip` compresses it.

    HTTP error statuses come back as responses; connection failures raise (OSError).
    """
    all_headers = dict(headers or {})
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None and not isinstance(body, bytes):
        all_headers.setdefault("Content-Type", "application/json")
    if gzip and data is not None:
        data = gzip_module.compress(data)
        all_headers["Content-Encoding"] = "gzip"
    request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return HttpResponse(response.status, _lower(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, _lower(error.headers), error.read())


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class Process:
    """`python -m relay *args` in `cwd` (the repository by default), logging to a file.

    A context manager: leaving it stops the process (SIGTERM, then SIGKILL).
    `start()` again after an exit runs the same command again, same log file.
    With `new_session` set it leads a process group of its own, so a test can kill
    it with everything it started (os.killpg).
    """

    new_session = False

    def __init__(
        self,
        args: Sequence[str],
        log_dir: Path,
        name: str = "relay",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [str(arg) for arg in args]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.name = name
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd else REPO_ROOT
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "relay", *self.args]

    def start(self) -> Self:
        assert not self.running, f"{self.name} is already running"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name}: {' '.join(_masked(self.command))}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=self.new_session,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit status; AssertionError (with the log's tail) if still running at timeout."""
        assert self.popen is not None, f"{self.name} was never started"
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s\n{self.log_tail()}"
            ) from None

    def terminate(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """SIGTERM and wait for the exit status (AssertionError if it does not stop in time)."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        return self.wait(timeout)

    def kill9(self) -> int:
        """SIGKILL: no chance to clean up. Returns the exit status (-9)."""
        if self.running:
            self.popen.kill()  # type: ignore[union-attr]
        return self.wait()

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Terminate, falling back to SIGKILL; never raises (for clean-up paths)."""
        if not self.running:
            return
        try:
            self.terminate(timeout)
        except AssertionError:
            self.kill9()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path}:\n{tail}"

    def wait_for_log(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> re.Match[str]:
        """The first match of the regex `pattern` in the log, once it appears."""
        return wait_until(
            lambda: self._alive_or_fail() and re.search(pattern, self.log_text()),
            timeout, message=lambda: f"{pattern!r} in {self.name}'s log\n{self.log_tail()}",
        )

    def _alive_or_fail(self) -> bool:
        if not self.running:
            raise AssertionError(
                f"{self.name} exited with status {self.returncode}\n{self.log_tail()}"
            )
        return True

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MockUpstream(Process):
    """`relay mock-upstream`, recording to TMP_DIR/upstream.ndjson; start() waits for /healthz.

    `faults` become start-up flags ({"status": 503, "down": True} -> --status 503 --down).
    Without `port` the first start picks a free one; restarts keep it.
    """

    def __init__(
        self,
        tmp_dir: Path,
        api_keys: Sequence[str] = (),
        faults: Mapping[str, Any] | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        name: str = "upstream",
        env: Mapping[str, str] | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__([], tmp_dir, name=name, env=env)
        self.record_path = Path(tmp_dir) / f"{name}.ndjson"
        self.port = port
        keys = [arg for key in api_keys for arg in ("--api-key", key)]
        self.options = [*keys, *_flags(faults or {}), *(["-v"] if verbose else []), *extra_args]

    def start(self) -> Self:
        self.args = ["mock-upstream", "--port", str(self.port or 0),
                     "--record", str(self.record_path), *self.options]
        already = len(re.findall("listening on", self.log_text()))
        super().start()
        # The mock prints its URL once listening; with --port 0 that is how we learn the port.
        match = wait_until(
            lambda: self._alive_or_fail() and _nth_url(self.log_text(), already),
            message=lambda: f"{self.name} never said it was listening\n{self.log_tail()}",
        )
        self.port = int(match)
        wait_until(lambda: self.control("GET", "/healthz") == {"status": "ok"},
                   ignore=(OSError,), message=lambda: f"{self.name} /healthz\n{self.log_tail()}")
        return self

    @property
    def base_url(self) -> str:
        assert self.port, f"{self.name} has no port yet"
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/logs/custom"

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = http_request(self.base_url + path, method, body)
        assert response.status == 200, f"{method} {path}: {response.status} {response.body!r}"
        return response.json()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge these switches into the ones in force; returns them all."""
        return self.control("POST", "/_mock/faults", faults)  # type: ignore[no-any-return]

    def clear_faults(self) -> dict[str, Any]:
        return self.control("DELETE", "/_mock/faults")  # type: ignore[no-any-return]

    def faults(self) -> dict[str, Any]:
        return self.control("GET", "/_mock/faults")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "/_mock/stats")  # type: ignore[no-any-return]

    def records(self) -> list[dict[str, Any]]:
        """One dict per accepted request, in order (a line still being written is left out)."""
        try:
            text = self.record_path.read_text()
        except FileNotFoundError:
            return []
        # split on "\n" only: str.splitlines would also cut at U+2028 and friends inside JSON strings
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def entries(self) -> list[dict[str, Any]]:
        """Every accepted entry of every accepted request, in order."""
        return [entry for record in self.records() for entry in record["entries"]]


def _masked(command: Sequence[str]) -> list[str]:
    """The command with the value of every --api-key replaced: logs never hold a key."""
    return ["***" if i and command[i - 1] == "--api-key" else arg for i, arg in enumerate(command)]


def _flags(options: Mapping[str, Any]) -> list[str]:
    """{"error_rate": 0.5, "down": True} -> ["--error-rate", "0.5", "--down"]."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags


def _nth_url(log: str, n: int) -> str | None:
    ports = re.findall(r"listening on http://[^\s:]+:(\d+)/", log)
    return ports[n] if len(ports) > n else None
