"""The ceiling of statistics matching: devices handed the right BN statistics the moment their
corruption changes, by an oracle that knows which corruption each device is in.

Same devices and streams as the fleet benchmark (ResNet-20 EcoTTA, device configuration,
batch 1, each device its own corruption order and class-correlated label order), walked in
lockstep in this process (no Flower). Two runs:
- isolated: every device alone;
- oracle: a bank keyed by the true corruption; when a device enters a corruption some device
  has finished, it loads the bank's statistics (the running mean of what the devices that
  finished it had at the end) in place of its own. Meta networks stay each device's own.

What `edgeadapt.fleet.statistics_bank` does without the oracle (a signature of the input, one
round late, matched within a threshold) can at best reach the oracle's figure.

    python benchmarks/fleet/oracle_probe.py --data /tmp/c10c --devices 5 \
        --warmup-cache /tmp/fleet_warmups --out benchmarks/fleet/oracle_probe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _probe_args import probe_parser


def parse_args(argv=None) -> argparse.Namespace:
    p = probe_parser(__doc__, devices=5, out="oracle_probe")
    p.add_argument("--warmup-cache", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from edgeadapt.api import wrap
    from edgeadapt.bench.cifar import with_input_statistics
    from edgeadapt.bench.sources import ReleaseSource
    from edgeadapt.config import EcoTTAConfig
    from edgeadapt.data import CORRUPTIONS
    from edgeadapt.fleet import CorruptionFleet
    from edgeadapt.fleet.statistics_bank import (
        load_stream_statistics,
        stream_statistics,
        stream_statistics_keys,
    )
    from edgeadapt.models import create_model
    from edgeadapt.setup_data import prepare_adapter

    torch.set_num_threads(1)
    source = ReleaseSource(args.data)
    labels = source.get(CORRUPTIONS[0], 5)[1]
    model = create_model("resnet20", checkpoint=args.checkpoint)
    config = EcoTTAConfig.device(**with_input_statistics(None)["ecotta"])
    adapter = wrap(model, config, example_input=torch.zeros(2, 3, 32, 32))
    prepare_adapter(adapter, None, warmup_steps=500, seed=args.seed, progress=False,
                    warmup_cache=args.warmup_cache)  # fmt: skip
    fleet = CorruptionFleet(
        model=model, config=config, source=source, labels=labels,
        corruptions=tuple(CORRUPTIONS), images_per_domain=args.images_per_domain,
        batch_size=1, severity=5, delta=0.1, seed=args.seed,
        warm_state=adapter.adapter_state_dict(),
    )  # fmt: skip
    per_domain, domains = args.images_per_domain, len(CORRUPTIONS)
    report = {"args": vars(args), "runs": {}}
    for mode in ("isolated", "oracle"):
        start = time.perf_counter()
        devices = [fleet(i) for i in range(args.devices)]
        keys = stream_statistics_keys(devices[0].adapter)
        bank: dict[str, tuple[dict, int]] = {}
        wrong, seen = [0] * args.devices, [0] * args.devices
        with tqdm(total=args.devices * domains, desc=mode) as bar:
            for _ in range(domains):
                for i, device in enumerate(devices):
                    corruption = device.stream.domain(device.position)
                    if mode == "oracle" and corruption in bank:
                        load_stream_statistics(device.adapter, bank[corruption][0])
                    stats = device.adapt(per_domain)
                    wrong[i] += stats.errors
                    seen[i] += stats.samples
                    mine = stream_statistics(device.adapter, keys)
                    if corruption in bank:  # running mean over the devices that finished it
                        old, n = bank[corruption]
                        bank[corruption] = ({k: old[k] + (mine[k] - old[k]) / (n + 1)
                                             for k in keys}, n + 1)  # fmt: skip
                    else:
                        bank[corruption] = (mine, 1)
                    bar.update(1)
        report["runs"][mode] = {
            "mean_error": 100 * sum(wrong) / sum(seen),
            "device_errors": [100 * w / s for w, s in zip(wrong, seen, strict=True)],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"{mode}: {report['runs'][mode]['mean_error']:.2f}%", flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    iso, ora = report["runs"]["isolated"], report["runs"]["oracle"]
    rows = zip(iso["device_errors"], ora["device_errors"], strict=True)
    lines = [
        f"Oracle statistics matching: {args.devices} devices, {args.images_per_domain} images "
        "per domain at batch 1 (EcoTTA device configuration), lockstep in one process.",
        "",
        "| device | isolated | oracle statistics |",
        "|---|---:|---:|",
        *(f"| {i} | {a:.2f} | {b:.2f} |" for i, (a, b) in enumerate(rows)),
        f"| mean | **{iso['mean_error']:.2f}** | **{ora['mean_error']:.2f}** |",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
