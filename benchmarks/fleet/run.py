"""Fleet adaptation on CIFAR-10-C: fleet-averaged vs isolated EcoTTA vs the source model.

N simulated devices (Flower's simulation engine), each a continual CIFAR-10-C stream at
severity 5 with its own order of the 15 corruptions and its own class-correlated label order
(Dirichlet δ per device and domain, NOTE/RoTTA), all starting from one ResNet-20 EcoTTA
adapter warmed up on clean CIFAR-10. Every R steps the fleet aggregates the adapter state
(FedAvg weighted by samples, and a robust strategy) and devices merge it. Reports the online
error over all devices per round for each run, and the bytes each device sends and receives
per round; writes JSON, Markdown and a PNG.

    python benchmarks/fleet/run.py --devices 20 --images-per-domain 128 --out benchmarks/fleet/small
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = Path(__import__("os").environ.get("EDGEADAPT_SHARED", ROOT.parent / "shared"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=20, help="N simulated devices (20-100)")
    p.add_argument("--images-per-domain", type=int, default=128,
                   help="images of each corruption a device sees (of 10000)")  # fmt: skip
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps-per-round", type=int, default=2, help="R: batches between aggregations")
    p.add_argument("--strategies", default="fedavg,median",
                   help="comma-separated fleet strategies to run")  # fmt: skip
    p.add_argument("--merge", default="replace")
    p.add_argument("--merge-factor", type=float, default=0.5)
    p.add_argument("--stream-statistics", choices=("local", "matched"), default="local",
                   help="matched: devices whose input changed get the fleet's BN statistics "
                   "for input like it (edgeadapt.fleet.statistics_bank)")  # fmt: skip
    p.add_argument("--match-threshold", type=float, default=0.12)
    p.add_argument("--isolated-from", metavar="PREFIX.json", default=None,
                   help="take source and isolated from a run with the same devices and streams "
                   "(checked) instead of running them again")  # fmt: skip
    p.add_argument("--no-share-statistics", action="store_true",
                   help="share the meta networks' weights only; their BN statistics stay local")  # fmt: skip
    p.add_argument("--delta", type=float, default=0.1,
                   help="Dirichlet concentration of the label order; 0 for i.i.d.")  # fmt: skip
    p.add_argument("--severity", type=int, default=5)
    p.add_argument("--corruptions", default="standard", help="'standard' (the 15) or a list")
    p.add_argument("--data", default="/tmp/c10c", help="CIFAR-10-C release folder")
    p.add_argument("--checkpoint", default=str(SHARED / "models" / "resnet20_cifar10jpeg.pt"))
    p.add_argument("--source-data", default=None,
                   help="clean images for the warm-up (default: ../shared's JPEG CIFAR-10)")  # fmt: skip
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--warmup-cache", default=None, help="a folder to keep the warm-up in")
    p.add_argument("--config", choices=("default", "device"), default="default",
                   help="EcoTTAConfig() or EcoTTAConfig.device()")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads here and cores per simulated device (default: all); 1 "
                   "is faster on a machine other jobs keep busy")  # fmt: skip
    p.add_argument("--no-isolated", action="store_true", help="skip the isolated baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "fleet"),
                   help="output prefix: writes PREFIX.json, PREFIX.md, PREFIX.png")  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", metavar="PREFIX.json", default=None,
                   help="only rewrite PREFIX.md and PREFIX.png from a run's JSON")  # fmt: skip
    return p.parse_args(argv)


# The settings that decide what source and isolated devices see and do: a run that shares
# them may reuse another's baselines (--isolated-from) instead of an hour of adaptation.
BASELINE_ARGS = ("devices", "images_per_domain", "batch", "steps_per_round", "delta",
                 "severity", "corruptions", "checkpoint", "source_data", "warmup_steps",
                 "config", "seed")  # fmt: skip


def baselines_from(json_path: str, args: argparse.Namespace):
    """(the run's JSON, its source and isolated results, their seconds); SystemExit when the
    run had other settings or lacks either baseline."""
    import json

    from edgeadapt.fleet.runner import FleetResult

    data = json.loads(Path(json_path).read_text())
    differ = [k for k in BASELINE_ARGS if data["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--isolated-from: {json_path} ran with other {', '.join(differ)}")
    taken = [
        FleetResult.from_dict(r) for r in data["results"] if r["mode"] in ("source", "isolated")
    ]
    if len(taken) != 2:
        raise SystemExit(f"--isolated-from: {json_path} has no source and isolated results")
    seconds = {r.mode: data["seconds"][r.mode] for r in taken}
    return data, taken, seconds


def render(json_path: str) -> int:
    """Markdown and plot again from a committed run (its numbers are read, never recomputed
    from streams); for a new table layout without an hour of adaptation."""
    import json

    from edgeadapt.fleet.report import write_outputs
    from edgeadapt.fleet.runner import FleetResult

    data = json.loads(Path(json_path).read_text())
    results = [FleetResult.from_dict(r) for r in data["results"]]
    out = Path(json_path).with_suffix("")
    notes = data.get("notes")
    md = out.with_suffix(".md")
    if notes is None and md.is_file():  # runs from before the JSON kept them: the Markdown's
        notes = md.read_text().split("\n\n")[1]  # paragraph between title and table
    for path in write_outputs(results, data["title"], markdown_path=md,
                              plot_path=out.with_suffix(".png"), notes=notes or ""):  # fmt: skip
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    import torch

    from edgeadapt.api import wrap
    from edgeadapt.bench.cifar import with_input_statistics
    from edgeadapt.bench.sources import ReleaseSource
    from edgeadapt.config import EcoTTAConfig
    from edgeadapt.data import CORRUPTIONS
    from edgeadapt.fleet import CorruptionFleet, FleetConfig, run_isolated, simulate
    from edgeadapt.fleet.report import write_outputs
    from edgeadapt.models import create_model
    from edgeadapt.setup_data import prepare_adapter

    progress = not args.quiet
    if args.threads:
        torch.set_num_threads(args.threads)
    corruptions = (
        tuple(CORRUPTIONS)
        if args.corruptions == "standard"
        else tuple(c.strip() for c in args.corruptions.split(",") if c.strip())
    )
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    # Every setting checked before the model and the data load.
    baselines = baselines_from(args.isolated_from, args) if args.isolated_from else None
    configs = {
        s: FleetConfig(
            devices=args.devices,
            rounds=1,
            steps_per_round=args.steps_per_round,
            strategy=s,
            merge=args.merge,
            merge_factor=args.merge_factor,
            share_statistics=not args.no_share_statistics,
            stream_statistics=args.stream_statistics,
            match_threshold=args.match_threshold,
            seed=args.seed,
        )
        for s in strategies
    }
    source = ReleaseSource(args.data)
    labels = source.get(corruptions[0], args.severity)[1]
    model = create_model("resnet20", checkpoint=args.checkpoint)
    inputs = with_input_statistics(None)["ecotta"]
    config = EcoTTAConfig.device(**inputs) if args.config == "device" else EcoTTAConfig(**inputs)
    adapter = wrap(model, config, example_input=torch.zeros(2, 3, 32, 32))
    t0 = time.perf_counter()
    setup = prepare_adapter(adapter, args.source_data, warmup_steps=args.warmup_steps,
                            seed=args.seed, progress=progress, warmup_cache=args.warmup_cache)  # fmt: skip
    warmup_seconds = time.perf_counter() - t0
    fleet = CorruptionFleet(
        model=model, config=config, source=source, labels=labels, corruptions=corruptions,
        images_per_domain=args.images_per_domain, batch_size=args.batch,
        severity=args.severity, delta=args.delta or None, seed=args.seed,
        warm_state=adapter.adapter_state_dict(),
    )  # fmt: skip
    rounds = -(-fleet.batches_per_device // args.steps_per_round)  # the whole stream
    n, r = args.devices, args.steps_per_round
    results, seconds = [], {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: mean error {result.mean_error():.2f}% in {seconds[name]} s", flush=True)
        results.append(result)

    if baselines is not None:
        if baselines[0]["fleet"] != fleet.describe():
            raise SystemExit(f"--isolated-from: {args.isolated_from} walked other streams")
        results += baselines[1]
        seconds.update(baselines[2])
    else:
        timed("source", lambda: run_isolated(fleet.source_only(), n, rounds, r, mode="source",
                                             progress=progress))  # fmt: skip
    if not args.no_isolated and baselines is None:
        timed("isolated", lambda: run_isolated(fleet, n, rounds, r, progress=progress))
    for s, c in configs.items():
        c = dataclasses.replace(c, rounds=rounds)
        timed(
            f"fleet-{s}",
            lambda c=c: simulate(fleet, c, progress=progress, cpus_per_device=args.threads),
        )

    title = (
        f"Fleet EcoTTA on CIFAR-10-C (ResNet-20, severity {args.severity}): {n} devices, "
        f"{args.images_per_domain} images per domain × {len(corruptions)} domains each, batch "
        f"{args.batch}, aggregation every {r} steps ({rounds} rounds)"
    )
    stream = "i.i.d." if not args.delta else f"class-correlated (Dirichlet δ = {args.delta})"
    first = results[-1].bytes_per_device()
    later = first[1:] or first
    sent = sum(b["sent"] for b in later) / len(later)
    received = sum(b["received"] for b in later) / len(later)
    matched = ""
    if args.stream_statistics == "matched":
        fleets = [x for x in results if x.mode.startswith("fleet")]
        banks = "; ".join(
            f"{x.mode}: {x.settings.get('bank_entries')} bank entries, "
            f"{x.settings.get('bank_handouts')} handed out"
            for x in fleets
        )
        matched = (
            " Stream statistics matched (edgeadapt.fleet.statistics_bank, threshold "
            f"{args.match_threshold}): a device whose input changed gets the server bank's "
            f"nearest BN statistics; {banks}."
        )
    reused = (
        f" Source and isolated are taken from {args.isolated_from} (same devices, streams and "
        "settings, checked)."
        if args.isolated_from
        else ""
    )
    notes = (
        f"Each device: its own order of the corruptions, its own {args.images_per_domain} "
        f"images per domain in a {stream} label order; all start from one EcoTTA adapter "
        f"({args.config} config) warmed up for {args.warmup_steps} steps on clean CIFAR-10. "
        "Error: online error (%) over all devices in the round (a device is scored on each "
        "batch as it adapts on it). Fleet runs share the meta networks' weights"
        f"{'' if args.no_share_statistics else ' and BN statistics'} and merge the aggregate "
        f"by '{args.merge}'.{matched} Bytes: what Flower carries, per device per round "
        f"after round 1, on average {sent:.0f} B to and {received:.0f} B from a device."
        f"{reused} Wall-clock seconds on this machine: {seconds} (warm-up "
        f"{warmup_seconds:.0f} s)."
    )
    out = Path(args.out)
    extra = {
        "args": vars(args),
        "fleet": fleet.describe(),
        "config": dataclasses.asdict(config),
        "setup": setup,
        "seconds": seconds,
        "warmup_seconds": round(warmup_seconds, 1),
        "rounds": rounds,
        "notes": notes,
        "baselines_from": args.isolated_from,
    }
    for path in write_outputs(results, title, json_path=out.with_suffix(".json"),
                              markdown_path=out.with_suffix(".md"),
                              plot_path=out.with_suffix(".png"), extra=extra, notes=notes):  # fmt: skip
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
