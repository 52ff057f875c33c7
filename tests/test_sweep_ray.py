"""The benchmark sweeps' job runner (benchmarks/cifar10c/_sweep.py) on tiny jobs: each job is a
`python -c` that writes its JSON the way `edgeadapt bench --json` does. One local Ray is
started for the module (a few seconds), by the runner itself, so its shutdown is checked too."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from edgeadapt.errors import MissingExtraError

SWEEP_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar10c"


def _load(name: str):
    if name not in sys.modules:  # the scripts import it by this name, from their folder
        spec = importlib.util.spec_from_file_location(name, SWEEP_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sweep = _load("_sweep")


def _job(out: Path, name: str, code: int = 0) -> list[str]:
    """Prints its thread count to its log; writes out/<name>.json and a marker only on success."""
    src = (
        "import json, os, pathlib, sys\n"
        f"out = pathlib.Path({str(out)!r})\n"
        f"print('job {name} threads', os.environ['OMP_NUM_THREADS'], flush=True)\n"
        f"(out / 'ran_{name}').write_text('')\n"
        f"sys.exit({code}) if {code} else (out / '{name}.json').write_text(json.dumps({{'n': 1}}))\n"
    )
    return [sys.executable, "-c", src]


def _jobs(out: Path) -> dict[str, list[str]]:
    return {
        "finished": _job(out, "finished"),
        "ok": _job(out, "ok"),
        "fails": _job(out, "fails", code=3),
        "ok_too": _job(out, "ok_too"),
    }


def _sweep_once(out: Path, executor: str) -> dict[str, int]:
    out.mkdir(parents=True)
    (out / "finished.json").write_text("{}")  # an earlier run's result: must not run again
    return sweep.run_jobs(_jobs(out), out, workers=2, executor=executor)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="ray is not installed (the 'sweep' extra)")
    assert not ray.is_initialized()
    out = tmp_path_factory.mktemp("sweep") / "ray"
    codes = _sweep_once(out, "ray")
    return out, codes, ray.is_initialized()


def test_ray_runs_every_unfinished_job_and_collects_exit_codes(ray_run):
    out, codes, _ = ray_run
    assert codes == {"finished": 0, "ok": 0, "fails": 3, "ok_too": 0}
    # The failing job did not stop the others.
    assert (out / "ok.json").is_file() and (out / "ok_too.json").is_file()
    assert not (out / "fails.json").exists()


def test_ray_skips_a_finished_job(ray_run):
    out, _, _ = ray_run
    assert not (out / "ran_finished").exists()
    assert not (out / "finished.log").exists()
    assert (out / "ran_ok").exists()


def test_ray_writes_a_log_per_job_with_threads_set(ray_run):
    out, _, _ = ray_run
    threads = sweep.threads_per_job(os.cpu_count() or 1, 2)
    for name in ("ok", "fails", "ok_too"):
        assert (out / f"{name}.log").read_text() == f"job {name} threads {threads}\n"


def test_local_ray_is_shut_down_after_the_sweep(ray_run):
    _, _, still_up = ray_run
    assert not still_up


def test_pool_fallback_gives_the_same_codes(tmp_path):
    codes = _sweep_once(tmp_path / "pool", "pool")
    assert codes == {"finished": 0, "ok": 0, "fails": 3, "ok_too": 0}
    assert not (tmp_path / "pool" / "ran_finished").exists()


def test_nothing_left_to_run_needs_no_executor(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # not even an import
    (tmp_path / "a.json").write_text("{}")
    assert sweep.run_jobs({"a": ["false"]}, tmp_path, 2) == {"a": 0}


def test_missing_ray_names_the_extra_and_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"edgeadapt\[sweep\].*--executor pool"):
        sweep.run_jobs({"a": _job(tmp_path, "a")}, tmp_path, 2)
    assert not (tmp_path / "ran_a").exists()


def test_executor_arguments_default_to_a_local_ray():
    ap = argparse.ArgumentParser()
    sweep.add_executor_args(ap)
    assert vars(ap.parse_args([])) == {"executor": "ray", "ray_address": None}
    args = ap.parse_args(["--executor", "pool", "--ray-address", "auto"])
    assert (args.executor, args.ray_address) == ("pool", "auto")
    with pytest.raises(ValueError, match="executor"):
        sweep.run_jobs({}, Path("."), 1, executor="dask")


def test_only_cuda_jobs_ask_for_a_gpu():
    assert sweep.wants_gpu(["bench", "--device", "cuda:1", "--n-images", "10"])
    assert not sweep.wants_gpu(["bench", "--device", "cpu"])
    assert not sweep.wants_gpu(["bench", "--methods", "cuda"])


def test_ray_comes_with_the_sweep_extra():
    with open(SWEEP_DIR.parents[1] / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert any(req.startswith("ray") for req in extras["sweep"])
    assert "sweep" in extras["all"][0]
