"""Run the fenced code blocks of a Markdown file in order, as a new user would (tests/test_readme.py).

Every fenced block carries a language. ```bash blocks run with `bash -euo pipefail`, ```python
blocks in one interpreter session in order (a later block uses the names an earlier one made),
both in one working folder; every other language (```text, ```toml, ...) is not run. An HTML
comment right above a block changes how it runs, and must say why:

    <!-- readme-test: skip. Why: ... -->
    <!-- readme-test: background, port "/dev/pts/N". Why: ... -->

`skip` does not run the block. `background` starts it without waiting, reads the `PTY <path>`
line it prints, and puts that path in place of the quoted placeholder in the blocks after it;
it is stopped when the run ends.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "BlockFailed", "Directive", "parse_blocks", "run_blocks"]

RUN_LANGUAGES = ("bash", "python")
_FENCE = re.compile(r"^```(\S*)\s*$")
_DIRECTIVE = re.compile(
    r"<!--\s*readme-test:\s*(?P<action>[a-z]+)(?:,\s*port\s+\"(?P<placeholder>[^\"]+)\")?\s*\."
    r"\s*Why:\s*(?P<why>.*?)\s*-->",
    re.S,
)
_PTY = re.compile(r"^PTY (\S+)$")
OUTPUT_TAIL = 6000  # characters of a failing block's output in the failure message


@dataclass(frozen=True)
class Directive:
    action: str  # "skip" or "background"
    why: str
    placeholder: str | None = None  # background: the text its printed port replaces


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str  # "" when the fence names none
    code: str
    directive: Directive | None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


class BlockFailed(AssertionError):
    """A block exited non-zero, raised, or ran past its time; the message holds its output."""


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of `path` in order, with the directive right above it (blank lines
    between are allowed). Raises ValueError for a directive that is malformed or says no why."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path.name}:{start + 1}: a code block that is never closed")
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(
            Block(path, start + 1, match.group(1), code, _directive_above(path, lines, start))
        )
        i = end + 1
    return blocks


def _directive_above(path: Path, lines: list[str], fence: int) -> Directive | None:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not lines[j].rstrip().endswith("-->"):
        return None
    k = j
    while k >= 0 and "<!--" not in lines[k]:
        k -= 1
    comment = "\n".join(lines[k : j + 1])
    if "readme-test" not in comment:
        return None
    match = _DIRECTIVE.search(comment)
    if not match or match.group("action") not in ("skip", "background") or not match.group("why"):
        raise ValueError(
            f"{path.name}:{k + 1}: malformed directive {comment!r}; write "
            '<!-- readme-test: skip. Why: ... --> or <!-- readme-test: background, port "X". '
            "Why: ... -->"
        )
    if (match.group("action") == "background") != (match.group("placeholder") is not None):
        raise ValueError(f"{path.name}:{k + 1}: background, and only background, names a port")
    return Directive(match.group("action"), " ".join(match.group("why").split()),
                     match.group("placeholder"))  # fmt: skip


def _failure(block: Block, what: str, seconds: float, output: str) -> BlockFailed:
    tail = output[-OUTPUT_TAIL:]
    return BlockFailed(
        f"{block.where}: the {block.language} block {what} after {seconds:.1f} s.\n"
        f"--- the block ---\n{block.code}--- its output (last {len(tail)} characters) ---\n{tail}"
    )


# One interpreter for every python block: each is compiled under the Markdown file's name with
# its own line numbers, so a traceback points at the README line that failed.
_SESSION = r"""
import json, os, sys, traceback
results = os.fdopen(int(sys.argv[1]), "w")
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    block = json.loads(line)
    source = "\n" * block["line"] + block["code"]
    try:
        exec(compile(source, block["path"], "exec"), namespace)
        ok = True
    except BaseException:
        traceback.print_exc()
        ok = False
    sys.stdout.flush()
    sys.stderr.flush()
    results.write(json.dumps({"ok": ok}) + "\n")
    results.flush()
"""


class _PythonSession:
    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        read, self._write = os.pipe()
        self._out = open(log, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _SESSION, str(self._write)], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT,
            pass_fds=(self._write,), text=True,
        )  # fmt: skip
        os.close(self._write)
        self._results = os.fdopen(read)

    def run(self, block: Block, timeout: float) -> tuple[bool | None, str]:
        """(True/False for ok/raised, None when it ran past `timeout`; its output)."""
        offset = self.log.stat().st_size
        payload = {"path": str(block.path), "line": block.line, "code": block.code}
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self._results], [], [], timeout)
        ok = json.loads(self._results.readline() or '{"ok": false}')["ok"] if ready else None
        with open(self.log, "rb") as f:
            f.seek(offset)
            return ok, f.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._results.close()
        self._out.close()


def _start_background(block: Block, cwd: Path, env: dict[str, str], log: Path, timeout: float):
    """Start the block in its own session; returns (process, the port it printed)."""
    out = open(log, "wb")  # noqa: SIM115 (the process keeps writing to it)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=out, start_new_session=True)  # fmt: skip
    out.close()
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else b""
        if ready and not line:  # it exited before printing a port
            break
        seen += line
        match = _PTY.match(line.decode(errors="replace").strip())
        if match:
            return proc, match.group(1)
    _stop(proc)
    raise _failure(block, "printed no 'PTY <path>' line", timeout,
                   seen.decode(errors="replace") + log.read_text(errors="replace"))  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    """Stop a background block: SIGTERM to the session it was started in, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def run_blocks(
    blocks: list[Block],
    cwd: Path,
    env: dict[str, str],
    *,
    timeout: float = 300.0,
    log: Callable[[str], object] = lambda _: None,
) -> list[tuple[Block, float]]:
    """Run `blocks` in order in `cwd` (see the module docstring); returns (block, seconds) for
    each block that ran, and `log`s each as it ends. Raises BlockFailed at the first block
    that fails."""
    ran: list[tuple[Block, float]] = []
    substitutions: dict[str, str] = {}
    background: list[subprocess.Popen] = []
    session: _PythonSession | None = None
    try:
        for original in blocks:
            if original.language not in RUN_LANGUAGES:
                continue
            if original.directive and original.directive.action == "skip":
                continue
            code = original.code
            for placeholder, value in substitutions.items():
                code = code.replace(placeholder, value)
            block = Block(original.path, original.line, original.language, code, original.directive)
            start = time.perf_counter()
            if block.directive and block.directive.action == "background":
                log_path = cwd.parent / f"background-{block.line}.log"
                proc, port = _start_background(block, cwd, env, log_path, timeout=120.0)
                background.append(proc)
                substitutions[block.directive.placeholder] = port
            elif block.language == "bash":
                try:
                    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, timeout=timeout)  # fmt: skip
                except subprocess.TimeoutExpired as exc:
                    output = (exc.stdout or b"").decode(errors="replace") if isinstance(
                        exc.stdout, bytes) else (exc.stdout or "")  # fmt: skip
                    raise _failure(block, f"ran past {timeout:.0f} s", timeout, output) from None
                if done.returncode != 0:
                    raise _failure(block, f"exited {done.returncode}",
                                   time.perf_counter() - start, done.stdout)  # fmt: skip
            else:
                if session is None:
                    session = _PythonSession(cwd, env, cwd.parent / "python-session.log")
                ok, output = session.run(block, timeout)
                if not ok:
                    what = "raised" if ok is False else f"ran past {timeout:.0f} s"
                    raise _failure(block, what, time.perf_counter() - start, output)
            ran.append((original, time.perf_counter() - start))
            log(f"{original.where:14s} {original.language:6s} {ran[-1][1]:6.1f} s")
    finally:
        if session is not None:
            session.close()
        for proc in background:
            _stop(proc)
    return ran
