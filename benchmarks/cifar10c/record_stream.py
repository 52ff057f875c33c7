"""The benchmark of record, v2: the stream a device sees. ResNet-20 (JPEG CIFAR-10 source),
the 15 corruptions at severity 5, continual, for batch {1, 4, 16, 64} × stream {i.i.d.,
class-correlated δ = 0.1}, every method (CoTTA at batch 16 and 64 only), and EcoTTA both as
the library default and in its device configuration; long-term (10 rounds) at batch 1 on the
correlated stream.

    python benchmarks/cifar10c/make_release.py --out /tmp/c10c          # once
    python benchmarks/cifar10c/record_stream.py continual --data /tmp/c10c --n-images 2000
    python benchmarks/cifar10c/record_stream.py long-term --data /tmp/c10c --n-images 1000

Each (batch, stream, method) is one `edgeadapt bench` process that saves its progress after
every domain: the same command run again resumes, in another session too. Writes
record_stream_<suite>.json/.md/.png beside this file; every row records its batch, stream,
configuration, peak step memory and img/s on this machine. Settings are the library defaults
(tuned on the four extra corruptions only: tune_stream.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from _jobs import add_executor_args, bench_command, keep_earlier_rows, merge, run_parallel

from edgeadapt._paths import shared_dir
from edgeadapt.bench.report import results_from_json
from edgeadapt.config import SMALL_SRAM_SETTINGS, EcoTTAConfig

HERE = Path(__file__).resolve().parent
METHODS = ["source", "norm", "tent", "eata", "cotta", "rotta", "sar", "ecotta", "ecotta-device",
           "ecotta-device-small"]  # fmt: skip

BATCHES = (1, 4, 16, 64)
STREAMS = ("iid", "correlated")
SLOW = {"cotta": 16}  # method -> smallest batch it runs at here (32 augmented views a step)
SUITES = {"continual": 1, "long-term": 10}


def device_settings() -> dict:
    """EcoTTA as the exporter writes it for a device (EcoTTAConfig.device())."""
    default = EcoTTAConfig()
    return {k: v for k, v in vars(EcoTTAConfig.device()).items() if getattr(default, k) != v}


def method_args(method: str) -> tuple[list[str], str]:
    """bench arguments of a row, and its label in the tables."""
    if method not in ("ecotta-device", "ecotta-device-small"):
        return ["--methods", method], method
    settings = device_settings()
    label = "ecotta (device: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"
    if method == "ecotta-device-small":
        # EcoTTAConfig.device_small(): the configuration that fits 320 KB of SRAM.
        settings = {**settings, **SMALL_SRAM_SETTINGS}
        label = ("ecotta (device, 320 KB: "
                 + ", ".join(f"{k}={v}" for k, v in SMALL_SRAM_SETTINGS.items()) + ")")  # fmt: skip
    return ["--methods", "ecotta", "--overrides", json.dumps({"ecotta": settings})], label


def job_name(batch: int, stream: str, method: str) -> str:
    return f"b{batch}_{stream}_{method}"


def row_key(row: dict) -> tuple[str, int, str]:
    """Which run a table row is: its label, batch and stream."""
    return row["method"], row["batch_size"], row["stream"]["order"]


def job_key(name: str, label: str) -> tuple[str, int, str]:
    """row_key of the row job `name` (job_name's b<batch>_<stream>_<method>) writes."""
    batch, stream, _ = name.split("_", 2)
    return label, int(batch[1:]), stream


def mark_earlier_device(row: dict, current: str) -> dict:
    """A device row kept from an earlier release whose device configuration differed: its
    label lists what differed from the library defaults *then* (momentum 0.9 was one), so it
    says it is an earlier configuration instead of passing for today's."""
    earlier = row["method"].startswith("ecotta (device:") and row["method"] != current
    return {**row, "method": "ecotta (earlier device" + row["method"][14:]} if earlier else row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--data", required=True, help="release folder from make_release.py")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=None, help="the first N of each domain")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batches", default=None, help="comma list; long-term: 1")
    ap.add_argument("--streams", default=None, help="comma list; long-term: correlated")
    ap.add_argument("--out", default=None, help="folder for per-run JSON, logs and progress")
    ap.add_argument("--round-order", choices=["redraw", "repeat"], default="redraw",
                    help="long-term: a fresh label order per round, or round 1's replayed")  # fmt: skip
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the tables from the runs in --out so far")  # fmt: skip
    add_executor_args(ap)  # --executor, --ray-address
    args = ap.parse_args()
    rounds = SUITES[args.suite]
    long_term = args.suite == "long-term"
    batches = [int(b) for b in (args.batches or ("1" if long_term else "1,4,16,64")).split(",")]
    streams = (args.streams or ("correlated" if long_term else "iid,correlated")).split(",")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"--methods: {unknown} are not rows of this benchmark; known: {METHODS}")
    subset = f"_n{args.n_images}" if args.n_images else ""
    subset += "_repeat" if args.round_order == "repeat" else ""
    stem = HERE / f"record_stream_{args.suite}{subset}"
    out = Path(args.out or HERE / f"record_stream_{args.suite}{subset}_runs")
    common = ["--checkpoint", str(shared_dir() / "models" / "resnet20_cifar10jpeg.pt"),
              "--data", args.data, "--protocol", args.suite, "--rounds", str(rounds)]  # fmt: skip
    common += ["--warmup-cache", str(out / "warmups")]  # one warm-up per EcoTTA configuration
    if args.n_images:
        common += ["--n-images", str(args.n_images)]
    common += ["--round-order", args.round_order]
    jobs, labels, order = {}, {}, []
    for batch in batches:
        for stream in streams:
            for method in methods:
                if batch < SLOW.get(method, 0):
                    continue
                name = job_name(batch, stream, method)
                extra, labels[name] = method_args(method)
                extra += ["--batch", str(batch), "--stream", stream]
                jobs[name] = bench_command(name, out, [*common, *extra])
                order.append(name)
    start = time.time()
    if not args.report_only:
        run_parallel(jobs, out, args.workers, executor=args.executor, ray_address=args.ray_address)
    # Runs not in `out` keep their rows from the committed file, so one method can be rerun
    # alone (in another session, on another machine) without dropping the others.
    payload = keep_earlier_rows(merge(out, order, labels), stem.with_suffix(".json"), labels,
                                key=row_key)  # fmt: skip
    have = {row_key(r) for r in payload["results"]}
    payload["missing"] = [n for n in order if job_key(n, labels[n]) not in have]
    payload["results"] = [mark_earlier_device(r, method_args("ecotta-device")[1])
                          for r in payload["results"]]  # fmt: skip
    payload["meta"] = {
        "suite": args.suite, "rounds": rounds, "severity": 5, "n_images": args.n_images,
        "round_order": args.round_order,
        "machine": f"{platform.processor() or platform.machine()}, one thread per run",
        "device_configuration": device_settings(),
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    table = write_report(payload, stem, args)
    print(table)
    print(f"{time.time() - start:.0f} s; missing: {payload['missing']}")


def write_report(payload: dict, stem: Path, args: argparse.Namespace) -> str:
    """Markdown: mean error per method × setting, then peak step memory and img/s; a plot."""
    rows = payload["results"]
    settings = sorted({(r["batch_size"], r["stream"]["order"]) for r in rows},
                      key=lambda s: (s[0], s[1] != "iid"))  # fmt: skip
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["batch_size"], r["stream"]["order"]): r for r in rows}

    def table(title: str, value) -> list[str]:
        head = " | ".join(f"b{b} {'iid' if s == 'iid' else 'corr'}" for b, s in settings)
        out = [f"**{title}**", "", f"| method | {head} |", "|---|" + "---:|" * len(settings)]
        for m in methods:
            vals = [cell.get((m, b, s)) for b, s in settings]
            out.append(
                f"| {m} | " + " | ".join("–" if v is None else value(v) for v in vals) + " |"
            )
        return [*out, ""]

    mib = 1 << 20
    subset = f", first {args.n_images} images of each domain" if args.n_images else ""
    if SUITES[args.suite] > 1:
        subset += (", every round replays round 1's stream" if args.round_order == "repeat"
                   else ", a label order drawn afresh each round")  # fmt: skip
    lines = [
        f"ResNet-20, CIFAR-10-C (JPEG) severity 5, {args.suite}, {SUITES[args.suite]} "
        f"round(s){subset}; correlated = Dirichlet class runs, δ = 0.1.",
        "",
        *table("Mean error (%)", lambda r: f"{r['mean_error']:.2f}"),
        *table("Peak step memory (MiB)", lambda r: f"{r['memory'].get('peak_step', 0) / mib:.1f}"),
        *table("Images per second", lambda r: f"{r['images_per_second']:.0f}"),
        f"ran on: {payload['meta']['machine']}; missing: {payload['missing']}",
    ]
    if SUITES[args.suite] > 1:
        lines += ["", "**Mean error per round (%)**", ""]
        for r in rows:
            rounds = " ".join(f"{e:.2f}" for e in r["mean_error_by_round"])
            lines.append(
                f"- {r['method']} (batch {r['batch_size']}, {r['stream']['order']}): {rounds}"
            )
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(text)
    _plot(results_from_json(payload), rows, settings, methods, stem.with_suffix(".png"))
    return text


def _plot(results, rows, settings, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, stream in zip(axes, STREAMS):
        for m in methods:
            pts = sorted((r["batch_size"], r["mean_error"]) for r in rows
                         if r["method"] == m and r["stream"]["order"] == stream)  # fmt: skip
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{'i.i.d.' if stream == 'iid' else 'correlated (δ = 0.1)'} stream")
        ax.set_xlabel("batch size")
    axes[0].set_ylabel("mean error (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
