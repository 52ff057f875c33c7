"""The same small sweep run twice, by the local thread pool and as Ray tasks: the results
must be identical, figure for figure (only timings may differ).

    python benchmarks/cifar10c/make_release.py --out /tmp/c10c          # once
    python benchmarks/cifar10c/ray_vs_pool.py --data /tmp/c10c

Both go through `_jobs.run_parallel`, as the sweep scripts do. Each method is one `edgeadapt
bench` job (continual over the four extra corruptions, severity 5, the first --n-images of
each). Both runs start from empty folders
(out/pool, out/ray, removed first) with their own EcoTTA warm-up cache, so nothing is shared
between them. Writes ray_vs_pool.json/.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from _jobs import bench_command, merge, run_parallel
from _sweep import threads_per_job

from edgeadapt._paths import shared_dir

HERE = Path(__file__).resolve().parent
TIMINGS = {"seconds", "images_per_second", "setup_seconds"}  # the only fields that may differ


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="release folder from make_release.py")
    ap.add_argument("--methods", default="source,norm,tent,ecotta")
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup-steps", type=int, default=20, help="EcoTTA's (64 images each)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray)")
    ap.add_argument("--out", default="/tmp/edgeadapt_ray_vs_pool", help="its pool/ and ray/ are replaced")  # fmt: skip
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    common = ["--checkpoint", str(shared_dir() / "models" / "resnet20_cifar10jpeg.pt"),
              "--data", args.data, "--corruptions", "extra", "--batch", str(args.batch),
              "--n-images", str(args.n_images), "--warmup-steps", str(args.warmup_steps)]  # fmt: skip
    runs, commands = {}, {}
    for executor in ("pool", "ray"):
        out = Path(args.out) / executor
        shutil.rmtree(out, ignore_errors=True)
        jobs = {m: bench_command(m, out, [*common, "--warmup-cache", str(out / "warmups"),
                                          "--methods", m]) for m in methods}  # fmt: skip
        commands[executor] = {m: " ".join(argv) for m, argv in jobs.items()}
        print(f"--- {executor}", flush=True)
        start = time.time()
        codes = run_parallel(
            jobs, out, args.workers, executor=executor, ray_address=args.ray_address
        )
        runs[executor] = {"codes": codes, "seconds": time.time() - start,
                          "payload": merge(out, methods)}  # fmt: skip
    pool, ray = (without_timings(runs[e]["payload"]["results"]) for e in ("pool", "ray"))
    by_method = {e: {r["method"]: r for r in runs[e]["payload"]["results"]} for e in runs}
    rows = []
    for m in methods:
        p, r = by_method["pool"].get(m), by_method["ray"].get(m)
        rows.append({
            "method": m,
            "pool_mean_error": p and p["mean_error"], "ray_mean_error": r and r["mean_error"],
            "pool_errors": p and [s["errors"] for s in p["segments"]],
            "ray_errors": r and [s["errors"] for s in r["segments"]],
            "identical": bool(p and r) and without_timings(p) == without_timings(r),
        })  # fmt: skip
    every_job_ran = all(rc == 0 for e in runs for rc in runs[e]["codes"].values())
    identical = every_job_ran and len(pool) == len(methods) and pool == ray
    result = {
        "identical": identical,
        "compared": "every field of every merged result row except " + ", ".join(sorted(TIMINGS)),
        "rows": rows,
        "wall_seconds": {e: round(runs[e]["seconds"], 1) for e in runs},
        "exit_codes": {e: runs[e]["codes"] for e in runs},
        "threads_per_job": threads_per_job(_cores(), min(args.workers, len(methods))),
        "machine": f"{platform.processor() or platform.machine()}, {_cores()} cores",
        "settings": vars(args),
        "commands": commands,
    }
    (HERE / "ray_vs_pool.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "ray_vs_pool.md").write_text(_table(result, args))
    print(_table(result, args))
    raise SystemExit(0 if identical else 1)


def _cores() -> int:
    return os.cpu_count() or 1


def _table(result: dict, args: argparse.Namespace) -> str:
    lines = [
        f"The same sweep by the thread pool and by Ray (local, {args.workers} jobs at once, "
        f"{result['threads_per_job']} thread(s) each, {result['machine']}): continual over the "
        f"4 extra corruptions, severity 5, first {args.n_images} images of each, batch "
        f"{args.batch}, EcoTTA warm-up {args.warmup_steps} steps. Errors: wrong predictions per "
        "domain (of "
        f"{args.n_images}).",
        "",
        "| method | pool mean error (%) | Ray mean error (%) | pool errors | Ray errors | identical |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in result["rows"]:
        pm = "–" if r["pool_mean_error"] is None else f"{r['pool_mean_error']:.4f}"
        rm = "–" if r["ray_mean_error"] is None else f"{r['ray_mean_error']:.4f}"
        lines.append(f"| {r['method']} | {pm} | {rm} | {r['pool_errors']} | {r['ray_errors']} "
                     f"| {'yes' if r['identical'] else '**no**'} |")  # fmt: skip
    wall = result["wall_seconds"]
    lines += [
        "",
        f"All rows identical ({result['compared']}): **{'yes' if result['identical'] else 'no'}**. "
        f"Wall time: pool {wall['pool']:.0f} s, Ray {wall['ray']:.0f} s (Ray's includes starting "
        "and stopping the local Ray; the machine was shared with other runs, so these are not a "
        "speed comparison).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
