"""benchmarks/cifar10c/_jobs.keep_earlier_rows: a method run alone in a later session is merged
into the committed record without dropping the other rows or how they were made."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "cifar10c"


@pytest.fixture
def jobs():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import _jobs

        yield _jobs
    finally:
        sys.path.remove(str(BENCH_DIR))


def _row(method: str, error: float) -> dict:
    return {"method": method, "mean_error": error}


def test_rows_not_rerun_are_kept_with_the_commands_that_made_them(jobs, tmp_path):
    earlier = tmp_path / "record.json"
    first = {"methods": "source,tent", "workers": 2}
    second = {"methods": "tent", "workers": 1}
    earlier.write_text(
        json.dumps(
            {
                "results": [_row("source", 40.0), _row("tent", 36.0)],
                "missing": [],
                "earlier_meta": [first],
                "meta": second,
            }
        )
    )
    payload = {"results": [_row("tent", 35.0), _row("teacher", 21.0)], "missing": []}

    merged = jobs.keep_earlier_rows(payload, earlier)

    assert [(r["method"], r["mean_error"]) for r in merged["results"]] == [
        ("source", 40.0),  # kept
        ("tent", 35.0),  # replaced by the new run, in the earlier file's order
        ("teacher", 21.0),  # new
    ]
    assert merged["kept_from_earlier"] == ["source"]
    assert merged["earlier_meta"] == [first, second]


def test_without_an_earlier_file_the_payload_is_unchanged(jobs, tmp_path):
    payload = {"results": [_row("tent", 35.0)], "missing": ["eata"]}
    assert jobs.keep_earlier_rows(payload, tmp_path / "absent.json") == payload


def test_rows_of_one_method_at_several_batches_are_kept_apart(jobs, tmp_path):
    """record_stream's tables hold one method at several batches and streams: keyed by
    (method, batch, stream), a rerun replaces only its own cell."""

    def row(method, batch, order, error):
        return {"method": method, "batch_size": batch, "stream": {"order": order},
                "mean_error": error}  # fmt: skip

    def key(r):
        return r["method"], r["batch_size"], r["stream"]["order"]

    earlier = tmp_path / "record.json"
    earlier.write_text(json.dumps({
        "results": [row("sar", 1, "iid", 28.2), row("sar", 64, "iid", 24.0)], "missing": [],
    }))  # fmt: skip
    merged = jobs.keep_earlier_rows(
        {"results": [row("sar", 64, "iid", 23.9)], "missing": []}, earlier, key=key
    )
    assert [(r["batch_size"], r["mean_error"]) for r in merged["results"]] == [
        (1, 28.2),
        (64, 23.9),
    ]
    assert merged["kept_from_earlier"] == ["sar"]


def test_a_kept_device_row_of_another_configuration_says_it_is_earlier():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import record_stream
    finally:
        sys.path.remove(str(BENCH_DIR))
    current = "ecotta (device: optimizer=sgd, lr=0.001, momentum=0.0, frozen_weights=int8)"
    old = {"method": "ecotta (device: optimizer=sgd, lr=0.0001, frozen_weights=int8)"}
    assert record_stream.mark_earlier_device(old, current)["method"] == (
        "ecotta (earlier device: optimizer=sgd, lr=0.0001, frozen_weights=int8)"
    )
    assert record_stream.mark_earlier_device({"method": current}, current)["method"] == current
    assert record_stream.mark_earlier_device({"method": "sar"}, current)["method"] == "sar"
    assert record_stream.job_key("b16_correlated_ecotta-device", current) == (
        current,
        16,
        "correlated",
    )
