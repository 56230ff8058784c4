"""The repository stands on its own: a copy of its tracked files, alone in an empty directory,
runs the tests that read fixtures, and a short `relay bench`, without reaching outside itself.

The copy has no ../shared beside it, FLUENT_BIT_BIN and RELAY_FIXTURES are unset, and an
audit hook (sitecustomize, inherited by every Python process started from the copy) records
any file opened in this checkout or in ../shared: the copy must not need either.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

# Every test module that reads the fixtures, and tests of the harness' fixture reader; each fast.
FIXTURE_USERS = [
    "tests/unit/stages/test_decode.py::test_fluent_bit_capture_decodes_to_its_records",
    "tests/unit/stages/test_decode.py::test_fixtures_are_present",
    "tests/unit/mapping/test_presets.py",
    "tests/unit/mapping/test_traffic.py",
    "tests/unit/commands/test_map.py::test_relay_map_reads_every_public_fixture",
    "tests/unit/test_shipper_configs.py",
    "tests/e2e/test_shippers.py::test_every_public_fluent_bit_fixture_is_covered",
    "tests/unit/tools/test_bench.py::test_fluentbit_bodies_have_the_shape_of_fluent_bits_nginx_records",
]
SKIP_ALLOWED = ("is not installed", "Fluent Bit binary")  # optional tools, never fixtures
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache",
             "data", "build"}

# Imported by every Python started with the copy's PYTHONPATH: logs opens outside the copy.
AUDIT = """\
import os, sys
_FORBIDDEN = {forbidden!r}
_ALLOWED = {allowed!r}
_LOG = {log!r}

def _hook(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if any(path == f or path.startswith(f + os.sep) for f in _FORBIDDEN) and \\
            not any(path.startswith(a + os.sep) for a in _ALLOWED):
        with open(_LOG, "a") as log:
            log.write(path + "\\n")

sys.addaudithook(_hook)
"""


def tracked_files(root: Path) -> list[Path]:
    """The files a clone would have: `git ls-files`, or a walk when this is not a git checkout."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60)
        names = [Path(name) for name in listed.stdout.decode().split("\0") if name]
        return [name for name in names if (root / name).is_symlink() or (root / name).is_file()]
    found = []
    for folder, dirs, files in os.walk(root):
        found += [Path(folder, d).relative_to(root) for d in dirs if Path(folder, d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                   and not Path(folder, d).is_symlink()]
        found += [Path(folder, name).relative_to(root) for name in files if not name.endswith(".pyc")]
    return found


def copy_checkout(destination: Path) -> Path:
    copy = destination / "relay"
    assert not copy.resolve().is_relative_to(REPO_ROOT), "the copy would land inside the checkout it copies"
    for name in tracked_files(REPO_ROOT):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / name).is_symlink():  # as a clone has it (configs/mappings -> the presets)
            target.symlink_to(os.readlink(REPO_ROOT / name))
        else:
            shutil.copy2(REPO_ROOT / name, target)
    return copy


def test_a_copy_of_the_tracked_files_alone_runs_fixture_tests_and_bench(tmp_path: Path) -> None:
    copy = copy_checkout(tmp_path / "alone")
    assert not (copy.parent / "shared").exists()
    audit_dir, log = tmp_path / "audit", tmp_path / "outside.log"
    audit_dir.mkdir()
    # The interpreter and its packages may live in this checkout's .venv; nothing else here may be read.
    prefix = str(Path(sys.prefix).resolve())
    (audit_dir / "sitecustomize.py").write_text(AUDIT.format(
        forbidden=[str(REPO_ROOT), str(REPO_ROOT.parent / "shared")], allowed=[prefix], log=str(log)))
    env = {k: v for k, v in os.environ.items() if k not in ("FLUENT_BIT_BIN", "RELAY_FIXTURES", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(audit_dir)])
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not shutil.which("fluent-bit", path=p))

    where = subprocess.run([sys.executable, "-c", "import relay; print(relay.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(copy / "relay" / "__init__.py"), where.stdout + where.stderr

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *FIXTURE_USERS],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    out = tests.stdout + tests.stderr
    assert tests.returncode == 0, out[-5000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(any(reason in line for reason in SKIP_ALLOWED) for line in skips), skips
    assert " passed" in out and int(out.rsplit(" passed", 1)[0].split()[-1]) >= 80, out[-2000:]

    harness = subprocess.run([sys.executable, "-c", "from tests.e2e.harness import fixture; "
                              "body, headers, records = fixture('nginx-combined.json.gzip'); print(len(records))"],
                             cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    assert harness.stdout.strip() == "200", harness.stderr

    bench = subprocess.run([sys.executable, "-m", "relay", "bench", "--json", "--quiet", "--workload", "single",
                            "--duration", "1s", "--rate", "300", "--workers", "1"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-3000:]
    result = json.loads(bench.stdout)
    assert result["entries_delivered"] == result["entries_acked"] > 0 and result["losses"] == 0

    outside = sorted(set(log.read_text().splitlines())) if log.exists() else []
    assert outside == [], f"the copy read files outside itself: {outside[:20]}"
