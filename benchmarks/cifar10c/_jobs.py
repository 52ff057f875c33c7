"""Run several `edgeadapt bench` processes side by side and merge what they write.

A benchmark process is mostly single-threaded Python driving small kernels, so on a machine
with many cores (or a GPU), or a Ray cluster, running methods and variants in parallel is what
makes the long runs fit. Each job writes its own JSON and log; `merge` joins the JSONs into one
payload that `edgeadapt.bench.report.results_from_json` reads. The jobs run as Ray tasks by
default (`_sweep.py`; `--executor pool` runs them in a thread pool here instead).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from _sweep import add_executor_args, run_jobs

__all__ = [
    "TEACHER",
    "add_executor_args",
    "bench_command",
    "keep_earlier_rows",
    "merge",
    "run_parallel",
]

# EcoTTA's mean-teacher option as the record and the tuning sweep run it (off by default).
TEACHER = {"teacher_momentum": 0.999, "teacher_views": 4}


def bench_command(name: str, out_dir: Path, args: Sequence[str]) -> list[str]:
    """One `edgeadapt bench` run; it saves its progress after every domain in out_dir/state/<name>,
    so a run killed halfway goes on from there when the sweep runs again."""
    return [sys.executable, "-m", "edgeadapt.cli", "bench", "--quiet", *args,
            "--json", str(out_dir / f"{name}.json"), "--state-dir", str(out_dir / "state" / name)]  # fmt: skip


def run_parallel(
    jobs: dict[str, list[str]],
    out_dir: Path,
    workers: int,
    *,
    executor: str = "ray",
    ray_address: str | None = None,
) -> dict[str, int]:
    """Run `jobs` (name -> argv), at most `workers` at once, each with cores / workers threads
    and its log in out_dir/<name>.log: as Ray tasks (a local Ray, or the cluster at
    `ray_address`) or, with executor="pool", in a thread pool on this machine. A job whose JSON
    is already in out_dir is not run again, so an interrupted sweep resumes. Returns each job's
    exit code; a failed job does not stop the others."""
    return run_jobs(jobs, out_dir, workers, executor=executor, ray_address=ray_address)


def merge(out_dir: Path, names: Sequence[str], labels: dict[str, str] | None = None) -> dict:
    """One payload with every finished job's results (relabelled by `labels`), in `names` order."""
    results, missing = [], []
    for name in names:
        path = out_dir / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        run = json.loads(path.read_text())
        device = run.get("args", {}).get("device")  # runs of one table may come from two machines
        for r in run["results"]:
            results.append({**r, "device": device, "method": (labels or {}).get(name, r["method"])})
    return {"results": results, "missing": missing}


def keep_earlier_rows(
    payload: dict,
    earlier: Path,
    labels: dict[str, str] | None = None,
    key: Callable[[dict], Hashable] = lambda r: r["method"],
) -> dict:
    """Add to `payload` every row of an earlier merged file (the committed record) that it has
    no run of, so one method can be run, or rerun, alone on another machine or in another
    session without dropping the rest of the table. Rows keep the earlier file's order, each
    replaced by its new run where there is one; "kept_from_earlier" lists the rows taken, and
    "earlier_meta" the earlier merges' settings, oldest first (each merge's own "meta" names
    only what it ran, so without them the file would not say how the kept rows were made)."""
    if not earlier.is_file():
        return payload
    before = json.loads(earlier.read_text())
    new = {key(r): r for r in payload["results"]}
    rows, kept = [], []
    for r in before["results"]:
        if key(r) in new:
            rows.append(new.pop(key(r)))
        else:
            rows.append(r)
            kept.append(r["method"])
    rows += new.values()  # runs the earlier file did not have
    have = {r["method"] for r in rows}
    missing = [n for n in payload["missing"] if (labels or {}).get(n, n) not in have]
    history = [*before.get("earlier_meta", []), *([before["meta"]] if "meta" in before else [])]
    return {
        **payload,
        "results": rows,
        "missing": missing,
        "kept_from_earlier": kept,
        "earlier_meta": history,
    }
