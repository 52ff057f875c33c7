"""Run a sweep's `edgeadapt bench` jobs: each as a Ray task (the default), or in a local pool.

A job is a name and an argv (`_jobs.bench_command`). Both executors keep the same contract:

- a job whose JSON (out_dir/<name>.json) exists is not run again, and each job keeps its
  per-domain progress in out_dir/state/<name>, so an interrupted sweep resumes;
- each job logs to out_dir/<name>.log; its exit code is collected, and a failed job does not
  stop the others;
- at most `workers` jobs run at once, each with OMP_NUM_THREADS = cores / workers (more
  threads than cores makes OpenMP spin, and three 2-thread jobs on 2 cores run slower than
  one after another).

On Ray, a task runs that same argv as a subprocess and asks Ray for `threads` CPUs (and a
share of a GPU when the argv says `--device cuda`). Without an address it starts a local Ray
for the sweep and shuts it down after; with `--ray-address` (or RAY_ADDRESS) it runs on that
cluster, where "cores" are the cluster's CPUs. On a cluster every path in the argv (--data,
--checkpoint, --json, --state-dir, the logs) must name the same files on every node, a shared
filesystem, and edgeadapt must be installed in the Python the Ray workers run: the argv's
interpreter is replaced by the worker's own.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType

from edgeadapt.errors import MissingExtraError

EXECUTORS = ("ray", "pool")
# Settings of the benchmark that the subprocess reads from its environment (the shared folder,
# warnings); a Ray worker's environment is the raylet's, not the driver's, so they are passed.
FORWARDED_ENV_PREFIX = "EDGEADAPT_"


def add_executor_args(ap: argparse.ArgumentParser) -> None:
    """--executor and --ray-address, the same in every sweep script."""
    ap.add_argument("--executor", choices=EXECUTORS, default="ray",
                    help="run each job as a Ray task (default), or in a local thread pool")  # fmt: skip
    ap.add_argument("--ray-address", default=None,
                    help="Ray cluster to run on ('auto', 'host:6379', 'ray://host:10001'); "
                         "default: $RAY_ADDRESS, else a local Ray for this sweep. Paths must "
                         "be on a filesystem every node shares")  # fmt: skip


def run_jobs(
    jobs: Mapping[str, list[str]],
    out_dir: Path,
    workers: int,
    *,
    executor: str = "ray",
    ray_address: str | None = None,
) -> dict[str, int]:
    """Run the jobs (name -> argv) not finished yet; return every job's exit code (0 for one
    already finished). A job that could not run at all (its Ray worker died) gets -1."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not one of {EXECUTORS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [name for name in jobs if (out_dir / f"{name}.json").is_file()]
    if done:
        print(f"already done, kept: {', '.join(done)}", flush=True)
    todo = {name: list(argv) for name, argv in jobs.items() if name not in done}
    codes: dict[str, int] = dict.fromkeys(done, 0)
    if not todo:
        return codes
    workers = max(1, min(workers, len(todo)))
    if executor == "pool":
        codes.update(_run_pool(todo, out_dir, workers))
    else:
        codes.update(_run_ray(todo, out_dir, workers, ray_address))
    codes = {name: codes[name] for name in jobs}  # in the sweep's order, not the finishing order
    failed = [name for name, rc in codes.items() if rc != 0]
    if failed:
        print(f"{len(failed)} of {len(jobs)} failed (see their logs): {', '.join(failed)}")
    return codes


def threads_per_job(cores: int, workers: int) -> int:
    return max(1, cores // max(1, workers))


def _job_env(threads: int) -> dict[str, str]:
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    return {**forwarded, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _progress(i: int, n: int, name: str, rc: int, seconds: float, host: str = "") -> None:
    where = f" on {host}" if host else ""
    print(f"[{i}/{n}] {name:32s} rc={rc} {seconds:6.0f} s{where}", flush=True)


def _run_pool(todo: dict[str, list[str]], out_dir: Path, workers: int) -> dict[str, int]:
    env = {**os.environ, **_job_env(threads_per_job(os.cpu_count() or 1, workers))}

    def one(name: str) -> tuple[int, float]:
        start = time.time()
        with open(out_dir / f"{name}.log", "w") as log:
            rc = subprocess.call(todo[name], stdout=log, stderr=subprocess.STDOUT, env=env)
        return rc, time.time() - start

    codes = {}
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(one, name): name for name in todo}
        for i, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            codes[name], seconds = future.result()
            _progress(i, len(todo), name, codes[name], seconds)
    return codes


# --- Ray ---------------------------------------------------------------------------------


def import_ray(feature: str = "running a sweep on Ray") -> ModuleType:
    """Ray, or MissingExtraError naming the extra that brings it (and the fallback)."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise  # ray is there but one of its own dependencies is broken
        raise MissingExtraError(
            f"{feature} needs ray, which is not installed: it comes with the 'sweep' extra, "
            'pip install "edgeadapt[sweep]" (or "edgeadapt[all]"); or run the sweep with '
            "--executor pool (a thread pool on this machine)"
        ) from exc
    return ray


def _die_with_parent() -> None:
    # Linux: the bench process gets SIGTERM when the Ray worker running it ends (a cancelled
    # sweep, ray.shutdown()), instead of running on unseen and holding the cores.
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _run_task(
    argv: list[str], log_path: str, env: dict[str, str], driver_python: str, cwd: str
) -> tuple[int, float, str]:
    """The body of one Ray task, on whichever node Ray picked: the job's argv as a subprocess."""
    if argv and argv[0] == driver_python:
        argv = [sys.executable, *argv[1:]]  # this node's Python, the one Ray (and edgeadapt) run
    start = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.call(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=cwd if os.path.isdir(cwd) else None,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return rc, time.time() - start, platform.node()


def wants_gpu(argv: list[str]) -> bool:
    return any(a == "--device" and b.startswith("cuda") for a, b in itertools.pairwise(argv))


def _start_ray(ray: ModuleType, address: str | None, workers: int) -> bool:
    """Connect to `address`, or start a local Ray; True when this call did (and the sweep
    disconnects, or stops the local Ray, when done)."""
    if ray.is_initialized():
        return False  # the caller's Ray (a test, a notebook): used as it is, left running
    # No usage report from a throwaway local cluster (this machine may have no network).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = dict(
        address="local",
        # Exactly `workers` jobs at once, as the pool runs them, also when workers > cores.
        num_cpus=workers * threads_per_job(os.cpu_count() or 1, workers),
        object_store_memory=100 * 2**20,  # only exit codes travel through it
        include_dashboard=False,
    )
    with warnings.catch_warnings():
        # Ray's notice that it will stop hiding GPUs from tasks that ask for none: GPU jobs
        # here ask for theirs (num_gpus), so either way is right.
        warnings.filterwarnings("ignore", message=".*no longer override accelerator", category=FutureWarning)  # fmt: skip
        ray.init(
            **({"address": address} if address else local),
            logging_level="WARNING",
            log_to_driver=False,  # a job writes to its own log; the driver prints progress
        )
    return True


def _run_ray(
    todo: dict[str, list[str]], out_dir: Path, workers: int, address: str | None
) -> dict[str, int]:
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = _start_ray(ray, address, workers)
    pending: list = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        node_cpus = max(int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"])
        gpus = ray.cluster_resources().get("GPU", 0)
        # cores / workers, and no more than one node has: a task bigger than every node
        # would wait forever.
        threads = max(1, min(threads_per_job(cpus, workers), node_cpus))
        on_gpu = [name for name, argv in todo.items() if wants_gpu(argv)]
        if on_gpu and not gpus:
            raise ValueError(
                f"jobs {on_gpu} run on --device cuda but the Ray cluster has no GPU; "
                "start Ray on a machine with one, or pass --device cpu"
            )
        where = f"Ray at {address}" if address else "a local Ray"
        print(f"running {len(todo)} jobs on {where} ({cpus} CPUs, {gpus:g} GPUs): "
              f"{threads} thread(s) each, {workers} at once", flush=True)  # fmt: skip
        # The task function travels by value: the workers cannot import this script's folder.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        task = ray.remote(_run_task)
        env = _job_env(threads)
        names = {}
        for name, argv in todo.items():
            options = dict(num_cpus=threads, name=name)
            if name in on_gpu:
                options["num_gpus"] = min(1.0, gpus / workers)  # the GPUs shared as the pool did
            ref = task.options(**options).remote(
                argv, str(out_dir / f"{name}.log"), env, sys.executable, os.getcwd()
            )
            names[ref] = name
        pending = list(names)
        codes = {}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            name = names[ready[0]]
            try:
                rc, seconds, host = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the worker or its node died
                print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
                rc, seconds, host = -1, math.nan, ""
            codes[name] = rc
            _progress(len(codes), len(todo), name, rc, seconds, host if address else "")
        return codes
    finally:
        for ref in pending:  # interrupted: the task's subprocess.call kills its job
            ray.cancel(ref)
        if started:
            ray.shutdown()
