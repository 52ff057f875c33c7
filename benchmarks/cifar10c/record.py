"""The benchmark of record: ResNet-20 (JPEG CIFAR-10 source), the 15 corruptions at
severity 5, batch 64 — continual (one round, all six methods) or long-term (10 rounds).

    python benchmarks/cifar10c/make_release.py --out /tmp/c10c          # once
    python benchmarks/cifar10c/record.py continual --data /tmp/c10c --device cuda --workers 8
    python benchmarks/cifar10c/record.py long-term --data /tmp/c10c --device cuda --workers 8
    python benchmarks/cifar10c/record.py continual --data /tmp/c10c --teacher   # + that row
    python benchmarks/cifar10c/record.py long-term --data /tmp/c10c --methods none --teacher

Each method runs as its own `edgeadapt bench` process (in parallel; the same command with
one method each is what a single-process run would do). Writes record_<suite>.json/.md/.png
beside this file. Settings are the library defaults (tuned on the extra corruptions only,
see tune.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _jobs import TEACHER, add_executor_args, bench_command, keep_earlier_rows, merge, run_parallel

from edgeadapt._paths import shared_dir
from edgeadapt.api import list_methods
from edgeadapt.bench.report import markdown_report, plot_results, results_from_json

HERE = Path(__file__).resolve().parent
# EcoTTA's mean-teacher option (off by default), run as an extra row with --teacher; the
# JSON's name is its label in the tables ("ecotta + teacher, 4 views").
TEACHER_ROW = "ecotta_+_teacher,_4_views"
SUITES = {
    "continual": (["source", "norm", "tent", "eata", "cotta", "ecotta"], 1),
    "long-term": (["source", "norm", "tent", "eata", "ecotta"], 10),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--data", required=True, help="release folder from make_release.py")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument(
        "--methods", default=None, help="a subset of the suite's methods; 'none' with --teacher"
    )
    ap.add_argument(
        "--n-images", type=int, default=None, help="a subset of each domain (labelled as such)"
    )
    ap.add_argument(
        "--overrides",
        default=None,
        help='per-method settings, JSON; e.g. \'{"cotta": {"views_per_pass": 32}}\' on a GPU',
    )
    ap.add_argument("--out", default=None, help="folder for per-method JSON and logs")
    ap.add_argument(
        "--teacher", action="store_true", help="also run EcoTTA's teacher option (an extra row)"
    )
    add_executor_args(ap)  # --executor, --ray-address
    args = ap.parse_args()
    methods, rounds = SUITES[args.suite]
    if args.methods:
        methods = [m for m in args.methods.split(",") if m and m != "none"]
        unknown = sorted(set(methods) - set(list_methods()))
        if unknown:
            ap.error(f"--methods: {unknown} are not methods; known: {list_methods()}")
    subset = f"_n{args.n_images}" if args.n_images else ""
    out = Path(args.out or HERE / f"record_{args.suite}{subset}_runs")
    common = ["--checkpoint", str(shared_dir() / "models" / "resnet20_cifar10jpeg.pt"),
              "--data", args.data, "--protocol", args.suite, "--rounds", str(rounds),
              "--device", args.device]  # fmt: skip
    if args.n_images:
        common += ["--n-images", str(args.n_images)]
    overrides = json.loads(args.overrides) if args.overrides else {}
    given = ["--overrides", json.dumps(overrides)] if overrides else []
    jobs = {m: bench_command(m, out, [*common, "--methods", m, *given]) for m in methods}
    if args.teacher:
        teacher = {**overrides, "ecotta": {**overrides.get("ecotta", {}), **TEACHER}}
        extra = ["--methods", "ecotta", "--overrides", json.dumps(teacher)]
        jobs[TEACHER_ROW] = bench_command(TEACHER_ROW, out, [*common, *extra])
    start = time.time()
    run_parallel(jobs, out, args.workers, executor=args.executor, ray_address=args.ray_address)
    # Every finished run of the suite in `out` (so a --methods rerun keeps the others), plus
    # EXTRA: earlier settings kept for comparison (e.g. ecotta_before_tuning.json).
    suite = SUITES[args.suite][0]
    extra = [p.stem for p in sorted(out.glob("*.json")) if p.stem not in suite]
    if args.teacher and TEACHER_ROW not in extra:
        extra.append(TEACHER_ROW)
    labels = {e: e.replace("_", " ") for e in extra}
    # A subset run (--n-images) never overwrites the full run's files.
    stem = HERE / (f"record_{args.suite}" + (f"_n{args.n_images}" if args.n_images else ""))
    # Runs not in `out` keep their rows from the committed file: a method run alone, on another
    # machine or in another session, does not drop the others from the table.
    payload = keep_earlier_rows(
        merge(out, suite + extra, labels), stem.with_suffix(".json"), labels
    )
    payload["meta"] = {"rounds": rounds, "severity": 5, "batch": 64, **vars(args)}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    results = results_from_json(payload)
    title = f"ResNet-20, CIFAR-10-C (JPEG) severity 5, {args.suite}, {rounds} round(s), batch 64"
    if args.n_images:
        title += f", first {args.n_images} images of each domain"
    table = markdown_report(results)
    # Rows can come from different machines (a GPU session, then a CPU rerun): say which.
    ran_on = ", ".join(f"{r['method']}: {r['device']}" for r in payload["results"])
    stem.with_suffix(".md").write_text(
        f"{title}\n\n{table}\n\nran on: {ran_on}\n\nmissing: {payload['missing']}\n"
    )
    plot_results(results, stem.with_suffix(".png"), title)
    print(table)
    print(f"{time.time() - start:.0f} s; missing: {payload['missing']}")


if __name__ == "__main__":
    main()
