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
