from relay.server.supervisor import MAX_BACKOFF, restart_delay


def test_a_worker_that_keeps_dying_waits_longer_each_time_up_to_a_bound() -> None:
    assert restart_delay(1) == 0.0  # one death after a stable run: back at once
    delays = [restart_delay(n) for n in range(2, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and delays[-1] == MAX_BACKOFF


def test_the_supervisor_loads_no_server() -> None:
    """It holds no socket and no queue: what `relay serve` imports before it knows it supervises
    must not pull in aiohttp, uvloop or the runtime (each worker has its own)."""
    import subprocess
    import sys

    code = ("import sys, relay.server.serve, relay.server.supervisor; "
            "print(sorted(m for m in ('aiohttp', 'uvloop', 'relay.runtime', 'relay.mapping') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
