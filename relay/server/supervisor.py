"""`relay serve` with `server.workers = N > 1`: the supervisor of N worker processes.

Each worker is `relay serve --worker I --workers N` (a fresh interpreter: no
state forked from here), binds the same address with SO_REUSEPORT (the kernel
spreads connections across them) and owns queue shard I (relay.store.shards).
The supervisor holds no socket and no queue: it only

- starts the workers, and restarts one that dies (kill -9, a crash) on the same
  shard: at once the first time, then with a doubling backoff (up to
  MAX_BACKOFF) while it keeps dying within STABLE seconds of its start. The
  other workers keep serving meanwhile. A worker that fails on its very first
  start with status 2 (a config or queue error) stops the whole relay with 2.
- forwards SIGHUP (reload) to every worker, and on SIGTERM or SIGINT asks every
  worker to drain (SIGTERM), waits for them, and exits 0 once all have; a worker
  still running shutdown_grace + KILL_AFTER seconds later is killed.

Workers get SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so a
supervisor killed alone never leaves workers serving unsupervised.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from relay.config import Config

log = logging.getLogger("relay")
STABLE = 10.0  # seconds a worker must live for its next death to restart it at once
MAX_BACKOFF = 30.0
KILL_AFTER = 5.0  # seconds past shutdown_grace before a worker that will not stop is killed
SUPERVISOR_ENV = "RELAY_SUPERVISOR_PID"  # a worker's parent: it checks it is still there
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def restart_delay(failures: int) -> float:
    """Seconds before a dead worker starts again: at once after a death in a stable run, then
    0.5 s, 1 s, 2 s, ... up to MAX_BACKOFF while it keeps dying within STABLE of its start."""
    return 0.0 if failures <= 1 else min(0.5 * 2 ** (failures - 2), MAX_BACKOFF)


@dataclass
class Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    starts: int = 0
    failures: int = 0  # deaths in a row within STABLE of their start
    restart_at: float | None = None
    exit_status: int | None = field(default=None)


class Supervisor:
    def __init__(self, config: Config, argv: list[str]) -> None:
        """`argv`: the `relay serve` options each worker is started with (config, log overrides)."""
        self.config = config
        self.count = config.worker_count
        self.argv = argv
        self.workers = [Worker(i) for i in range(self.count)]
        self.stopping_since: float | None = None

    def _start(self, worker: Worker) -> None:
        command = [sys.executable, "-m", "relay", "serve", *self.argv,
                   "--worker", str(worker.index), "--workers", str(self.count)]
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        worker.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)
        worker.started = time.monotonic()
        worker.starts += 1
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.index, worker.popen.pid)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.popen is not None and worker.popen.poll() is None:
                worker.popen.send_signal(signum)

    def _reap(self) -> int | None:
        """Look at every worker that exited; a status to exit with when the relay must stop."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.popen is None or worker.popen.poll() is None:
                continue
            status = worker.popen.returncode
            worker.popen = None
            if self.stopping_since is not None:
                worker.exit_status = status
                continue
            if status == 2 and worker.starts == 1:
                log.error("worker %d could not start (status 2; its log says why): stopping the relay",
                          worker.index)
                return 2
            worker.failures = worker.failures + 1 if now - worker.started < STABLE else 1
            delay = restart_delay(worker.failures)
            how = f"signal {-status}" if status < 0 else f"status {status}"
            log.error("worker %d (shard %d) exited with %s; restarting it %s", worker.index, worker.index,
                      how, "now" if not delay else f"in {delay:.1f}s (it keeps dying)")
            worker.restart_at = now + delay
        return None

    def _next_wake(self) -> float:
        now = time.monotonic()
        times = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.stopping_since is not None:
            times.append(self.stopping_since + float(self.config.server.shutdown_grace) + KILL_AFTER)
        return max(0.0, min(times) - now) if times else 60.0

    def run(self) -> int:
        # Signals wait here until sigtimedwait takes them: no handler runs between two checks.
        # Workers unblock them first thing (serve.run).
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        log.info("relay supervisor: %d workers%s on %s, queue shards under %s", self.count,
                 f" (server.workers = \"auto\": {self.config.auto_reason()})" if self.config.server.workers == "auto"
                 else "",
                 self.config.server.address, self.config.queue.path)
        for worker in self.workers:
            self._start(worker)
        while True:
            info = signal.sigtimedwait(_SIGNALS, self._next_wake())
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and self.stopping_since is None:
                log.info("stopping: every worker drains (grace %.0fs)", self.config.server.shutdown_grace)
                self.stopping_since = time.monotonic()
                for worker in self.workers:
                    worker.restart_at = None
                self._signal_all(signal.SIGTERM)
            elif info is not None and info.si_signo == signal.SIGHUP and self.stopping_since is None:
                log.info("SIGHUP: every worker reloads its config")
                self._signal_all(signal.SIGHUP)
            give_up = self._reap()
            if give_up is not None:
                self._stop_now()
                return give_up
            if self.stopping_since is not None:
                if all(w.popen is None for w in self.workers):
                    failed = [w.index for w in self.workers if w.exit_status not in (0, None)]
                    if failed:
                        log.error("workers %s did not stop cleanly", failed)
                    log.info("stopped: every worker has drained")
                    return 1 if failed else 0
                if time.monotonic() >= self.stopping_since + float(self.config.server.shutdown_grace) + KILL_AFTER:
                    log.error("workers still running after shutdown_grace + %.0fs: killing them", KILL_AFTER)
                    self._signal_all(signal.SIGKILL)
                    self.stopping_since += KILL_AFTER  # look again then, not in a busy loop
                continue
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    self._start(worker)

    def _stop_now(self) -> None:
        self._signal_all(signal.SIGTERM)
        for worker in self.workers:
            if worker.popen is not None:
                try:
                    worker.popen.wait(float(self.config.server.shutdown_grace) + KILL_AFTER)
                except subprocess.TimeoutExpired:
                    worker.popen.kill()
                    worker.popen.wait()


def die_with_parent() -> None:
    """In a worker: SIGTERM (a graceful drain) when the supervisor dies, however it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a worker outlives a killed supervisor
        return
    # The supervisor died before prctl took effect. (Not `getppid() == 1`: in a container the
    # supervisor itself may be pid 1.)
    expected = os.environ.get(SUPERVISOR_ENV)
    if expected and os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)
