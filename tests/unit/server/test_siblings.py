import asyncio
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from relay.runtime import Runtime
from relay.server import siblings
from relay.server.siblings import Siblings, run_dir


class FakeRuntime:
    def __init__(self, name: str) -> None:
        self.name = name


@siblings.view("test-echo")
async def echo(runtime: Runtime, query: Mapping[str, str]) -> Any:
    return {"who": cast(Any, runtime).name, "q": dict(query)}


def test_every_worker_answers_its_part_over_its_private_socket(tmp_path: Path) -> None:
    async def main() -> None:
        workers = [Siblings(str(tmp_path), i, 3) for i in range(3)]
        runtimes = [cast(Runtime, FakeRuntime(f"w{i}")) for i in range(3)]
        for worker, runtime in zip(workers[:2], runtimes[:2], strict=True):  # worker 2 is down
            await worker.start(runtime)
        try:
            mode = stat.S_IMODE(os.stat(workers[0].dir).st_mode)
            assert mode == 0o700  # only the relay's user may connect
            answers = await workers[1].everyone("test-echo", {"sink": "up"}, runtimes[1])
            assert [a.worker for a in answers] == [0, 1, 2]
            assert answers[0].ok and answers[0].value == {"who": "w0", "q": {"sink": "up"}}
            assert answers[1].ok and answers[1].value == {"who": "w1", "q": {"sink": "up"}}
            assert not answers[2].ok and "not answering" in (answers[2].error or "")
            missing = await workers[0].ask(1, "no-such-view", {})
            assert not missing.ok and missing.error == "answered 404"
        finally:
            for worker in workers:
                await worker.stop()

    asyncio.run(main())


def test_one_worker_needs_no_socket(tmp_path: Path) -> None:
    async def main() -> None:
        alone = Siblings(str(tmp_path), 0, 1)
        await alone.start(cast(Runtime, FakeRuntime("w0")))
        answers = await alone.everyone("test-echo", {}, cast(Runtime, FakeRuntime("w0")))
        assert [(a.worker, a.value["who"]) for a in answers] == [(0, "w0")]
        assert not os.path.exists(alone.dir)

    asyncio.run(main())


def test_a_queue_path_too_long_for_a_socket_gets_a_private_temp_directory(tmp_path: Path) -> None:
    short = run_dir(str(tmp_path / "q"))
    assert short == str(tmp_path / "q" / "run")
    deep = str(tmp_path / ("d" * 120))
    chosen = run_dir(deep)
    assert len(os.path.join(chosen, "w0.sock")) <= 100
    assert chosen == run_dir(deep)  # every worker finds the same one
    assert chosen != run_dir(deep + "x")
