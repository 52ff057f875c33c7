"""`edgeadapt device ...` refuses bad values before it opens the port: exit 2, one line on
stderr naming the flag. The port is `loop://`, which the checks never reach."""

from __future__ import annotations

import pytest

from edgeadapt.cli import main

PORT = ["--port", "loop://"]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["info", *PORT, "--baud", "0"], "--baud"),
        (["info", *PORT, "--timeout", "0"], "--timeout"),
        (["info", *PORT, "--retries", "-1"], "--retries"),
        (["info", *PORT, "--max-payload", "10"], "--max-payload"),
        (["info", *PORT, "--traffic-log", "{file}/log.txt"], "--traffic-log"),
        (["deploy", *PORT, "--program", "nope.pte"], "--program"),
        (["deploy", *PORT, "--training", "{dir}"], "--training"),
        (["infer", *PORT, "--input", "nope.pt"], "--input"),
        (["validate", *PORT, "--program", "{file}", "--n", "0"], "--n"),
        (["validate", *PORT, "--program", "{file}", "--atol", "-1"], "--atol"),
        (["validate", *PORT, "--program", "{file}", "--model", "resnet20"], "--checkpoint"),
        (["validate", *PORT, "--program", "{file}", "--report", "{dir}"], "--report"),
        (["stream", *PORT, "--input", "{file}", "--window", "0"], "--window"),
        (["pull-adapter", *PORT, "--out", "{dir}"], "--out"),
    ],
)
def test_bad_values_exit_2_before_the_port_opens(capsys, tmp_path, argv, flag):
    existing = tmp_path / "somefile.bin"
    existing.write_bytes(b"x")
    argv = [a.format(file=existing, dir=tmp_path) for a in argv]
    assert main(["device", *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1, err
