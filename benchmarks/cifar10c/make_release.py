"""Generate CIFAR-10-C style domains from the clean JPEG test split, one process per corruption.

    python benchmarks/cifar10c/make_release.py --out /tmp/cifar10c-s5 [--severities 5] [--workers 8]

Writes the release format (`<corruption>.npy`, `labels.npy`, `meta.json`) that
`edgeadapt bench --data` reads. The images are exactly what `edgeadapt bench` generates on
the fly (same function, same seed), so runs on either path agree; generating once lets many
benchmark processes share one copy. Also decodes the clean train split into the cache, so
the processes that warm EcoTTA up or estimate EATA's Fisher do not all decode it at once.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from edgeadapt.bench.cifar import default_clean_source, load_clean_split
from edgeadapt.data import ALL_CORRUPTIONS, write_cifar10c

_TEST: tuple = ()


def _write_one(job: tuple[str, str, tuple[int, ...], int]) -> tuple[str, float]:
    out, name, severities, seed = job
    start = time.perf_counter()
    write_cifar10c(
        out, *_TEST, corruptions=[name], severities=severities, seed=seed, progress=False
    )
    return name, time.perf_counter() - start


def main() -> None:
    global _TEST
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", default=None, help="clean CIFAR-10; default: ../shared's JPEG set")
    ap.add_argument("--severities", default="5", help="comma list, e.g. 1,2,3,4,5")
    ap.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS))
    ap.add_argument("--workers", type=int, default=max(1, mp.cpu_count() - 1))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source = args.source or default_clean_source()
    if source is None:
        raise SystemExit("no clean CIFAR-10: pass --source or put ../shared in place")
    _TEST = load_clean_split(source, "test")
    load_clean_split(source, "train")  # fills the decode cache for the benchmark processes
    severities = tuple(int(s) for s in args.severities.split(","))
    names = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    jobs = [(args.out, name, severities, args.seed) for name in names]
    # fork: the workers share the decoded split instead of pickling it.
    with mp.get_context("fork").Pool(min(args.workers, len(jobs))) as pool:
        for name, seconds in pool.imap_unordered(_write_one, jobs):
            print(f"{name:18s} {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
