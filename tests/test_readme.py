"""README.md runs as written (issue 21): its ```bash and ```python blocks, in order, in one
empty folder, offline, without ../shared; docs/*.md's blocks too. A failing block is reported
by its line, with its code and output (tests/readme_blocks.py runs them).

The exceptions are declared next to their blocks as `<!-- readme-test: ... Why: ... -->`
comments, and `KNOWN_EXCEPTIONS` lists them, so a new one is a visible change here too. What
a skipped block does is checked another way below (.ci/run installs and tests as the quick
start says, and runs the development commands).
"""

from __future__ import annotations

import os
import resource
import shlex
import sys
import time
from pathlib import Path

import pytest
from readme_blocks import RUN_LANGUAGES, parse_blocks, run_blocks

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
CI = REPO / ".ci" / "run"

# (file, the section heading above the block, action): every block that does not simply run.
KNOWN_EXCEPTIONS = [
    ("README.md", "## Quick start", "skip"),  # pip install + the whole suite: see below
    ("README.md", "## On the device", "background"),  # the emulator serves until stopped
    ("README.md", "## Development", "skip"),  # in the checkout; .ci/run runs them: see below
    ("bridge-protocol.md", "## 7. Using the implementations", "skip"),  # needs a board
    ("bridge-protocol.md", "## 7. Using the implementations", "skip"),  # C codec: its own test
]


def _section(path: Path, line: int) -> str:
    lines = path.read_text().splitlines()[:line]
    return next((text for text in reversed(lines) if text.startswith("## ")), "")


def _ci_lines() -> list[str]:
    return [line.strip() for line in CI.read_text().splitlines()]


def _clean_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty working folder, and an environment in which nothing of this machine's data
    or caches is found: an empty shared folder, HOME and the cache folders inside tmp."""
    work, shared, home = tmp_path / "work", tmp_path / "empty-shared", tmp_path / "home"
    for folder in (work, shared, home):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEADAPT_")}
    env.update(
        EDGEADAPT_SHARED=str(shared),
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        # `python` and `edgeadapt` are this environment's, as after the quick start's install.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    return work, env


def _needs_the_walkthrough_extras() -> None:
    for module in ("executorch", "av", "sklearn", "serial"):
        pytest.importorskip(module, reason=f"the README's walk-through needs {module} ([all])")
    from edgeadapt.firmware_bridge.emulator import pty_supported

    if not pty_supported():
        pytest.skip("the README's device walk-through needs pseudo-terminals")


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_block_names_its_language(doc: Path) -> None:
    untagged = [b.where for b in parse_blocks(doc) if not b.language]
    assert not untagged, f"tag these blocks (```bash, ```python, or ```text if not run): {untagged}"


def test_the_exceptions_are_the_known_few() -> None:
    found = sorted(
        (b.path.name, _section(b.path, b.line), b.directive.action)
        for doc in [README, *DOCS]
        for b in parse_blocks(doc)
        if b.directive
    )
    assert found == sorted(KNOWN_EXCEPTIONS), found
    runnable = [b for doc in [README, *DOCS] for b in parse_blocks(doc) if b.directive]
    assert all(b.language in RUN_LANGUAGES for b in runnable), "directives on blocks that run"


def _skipped_block(section: str) -> list[str]:
    (block,) = [b for b in parse_blocks(README) if _section(README, b.line) == section]
    assert block.directive and block.directive.action == "skip"
    return [line.split("  #")[0].strip() for line in block.code.splitlines() if line.strip()]


def test_ci_installs_and_tests_as_the_quick_start_says() -> None:
    install, test_command = _skipped_block("## Quick start")
    words = shlex.split(install.split("&&")[0])
    assert words[:2] == ["pip", "install"], install
    readme_packages = [w for w in words[2:] if w != "-e"]
    ci_installs = []
    for line in _ci_lines():
        if line.startswith("python -m pip install") and "--no-deps" not in line:
            ci_installs += [w for w in shlex.split(line)[4:] if not w.startswith("-")]
    ci_installs = [w for w in ci_installs if w != "pip"]  # pip's own upgrade
    # The same packages, torch pinned first (CI in two commands, the README in one).
    assert ci_installs == readme_packages, (ci_installs, readme_packages)
    assert '-e ".[all,dev]"' in CI.read_text() and "-e" in words
    assert test_command == "python -m pytest" and test_command in _ci_lines()


def test_ci_runs_the_development_commands() -> None:
    commands = [c.strip() for line in _skipped_block("## Development") for c in line.split("&&")]
    missing = [c for c in commands if c not in _ci_lines()]
    assert not missing, f".ci/run does not run {missing}"


def test_readme_runs_as_written(tmp_path: Path) -> None:
    _needs_the_walkthrough_extras()
    work, env = _clean_env(tmp_path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    try:
        ran = run_blocks(parse_blocks(README), work, env, log=lambda line: print(line, flush=True))
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = cpu.ru_utime + cpu.ru_stime - cpu_before
    print(f"README.md: {len(ran)} blocks in {time.perf_counter() - start:.0f} s "
          f"({cpu_seconds:.0f} s of CPU in its processes)")  # fmt: skip
    assert not any((tmp_path / "empty-shared").iterdir()), "something wrote to the shared folder"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_run_as_written(doc: Path, tmp_path: Path) -> None:
    blocks = [b for b in parse_blocks(doc) if b.language in RUN_LANGUAGES]
    if all(b.directive and b.directive.action == "skip" for b in blocks):
        return  # nothing to run: every block is skipped, for the reason it states
    _needs_the_walkthrough_extras()
    work, env = _clean_env(tmp_path)
    try:
        run_blocks(blocks, work, env)
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
