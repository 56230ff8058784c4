"""`relay serve`: one relay process (relay.server.process), or with `server.workers` > 1 a
supervisor of worker processes (relay.server.supervisor), each running relay.server.process.

The supervisor imports only what it needs (the config): it holds no queue and no
socket, so it stays small (about 30 MB instead of 50).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

from relay import telemetry
from relay.config import DEFAULT_CONFIG_PATH, load
from relay.errors import ConfigError
from relay.server.supervisor import Supervisor, die_with_parent
from relay.telemetry import setup_logging

log = logging.getLogger("relay")
MOCK_API_KEY = "local-mock-key"


def _start_local_mock() -> subprocess.Popen[bytes]:
    """`make run` without PROFOUND_API_KEY: deliver to a local mock upstream instead."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mock = subprocess.Popen([sys.executable, "-m", "relay", "mock-upstream", "--port", str(port),
                             "--api-key", MOCK_API_KEY])
    url = f"http://127.0.0.1:{port}/v1/logs/custom"
    os.environ["PROFOUND_URL"] = url
    os.environ["PROFOUND_API_KEY"] = MOCK_API_KEY
    # only the mock gets an example host: the real API must never receive an invented one
    os.environ.setdefault("RELAY_DEFAULT_HOST", "www.example.com")
    print(f"relay: PROFOUND_API_KEY is not set, so entries go to a local mock upstream at {url}\n"
          "relay: to deliver to the real API: export PROFOUND_API_KEY=<your key> and run `make run` again",
          file=sys.stderr, flush=True)
    return mock


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config file (TOML or YAML)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides [log] level")
    parser.add_argument("--log-format", choices=["text", "json"], help="overrides [log] format")
    parser.add_argument("--with-mock-upstream", action="store_true",
                        help="when PROFOUND_API_KEY is unset, start `relay mock-upstream` and deliver to it")
    # Set by the supervisor (server.workers > 1) for each worker it starts; not for people.
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The options a worker is started with: the same config and log overrides as the supervisor."""
    argv = ["-c", str(args.config)]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    if args.log_format:
        argv += ["--log-format", args.log_format]
    return argv


def run(args: argparse.Namespace) -> int:
    # The queue thread needs the GIL around every SQLite call; with the default 5 ms switch
    # interval it waits behind the event loop's decoding and mapping. Measured with relay
    # bench: 2 ms gives the best of both workloads (0.5 ms helped bulk bodies but cost the
    # one-entry requests a fifth of their rate).
    sys.setswitchinterval(0.002)
    mock = _start_local_mock() if args.with_mock_upstream and not os.environ.get("PROFOUND_API_KEY") else None
    try:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"relay: config error: {exc}", file=sys.stderr)
            return 2
        if args.worker is not None:
            # a worker: signals the supervisor holds blocked are inherited blocked; take them back
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            die_with_parent()
            telemetry.WORKER = args.worker
        setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
        if args.worker is None and config.worker_count > 1:
            return Supervisor(config, _worker_argv(args)).run()
        # here, not at the top: the supervisor never loads aiohttp, uvloop, the mappings...
        import asyncio

        import uvloop

        from relay.server.process import serve

        worker, workers = (0, 1) if args.worker is None else (args.worker, args.workers)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(config, (args.log_level, args.log_format), worker, workers))
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(timeout=10)
