"""How well the fleet's input signature tells CIFAR-10-C corruptions apart, round by round.

Statistics matching (`edgeadapt.fleet.statistics_bank`) calls a device's input "the same" as
last round when the two rounds' signatures are closer than `FleetConfig.match_threshold`, and
hands a changed device the bank entry nearest its new signature. This walks the fleet
benchmark's device streams (batch 1, class-correlated, each device its own corruption order)
through the source ResNet-20 in rounds of R frames, takes the shipped `InputSignature` of
every round (it depends on the frames and the frozen first convolution only, not on
adaptation), and reports the distances between consecutive rounds of one device (same
corruption or a new one) and between rounds of different devices, with the ROC AUC of
telling the two apart. For reference, the same for the first BN input's per-channel mean
and log spread alone (the first signature tried).

    python benchmarks/fleet/signature_probe.py --data /tmp/c10c --out benchmarks/fleet/signature_probe
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from _probe_args import probe_parser


def parse_args(argv=None) -> argparse.Namespace:
    p = probe_parser(__doc__, devices=10, out="signature_probe")
    p.add_argument("--steps-per-round", type=int, default=32, help="R: frames per signature")
    p.add_argument("--threshold", type=float, default=0.12, help="reported: shares below it")
    p.add_argument("--pairs", type=int, default=4000, help="random cross-device pairs")
    return p.parse_args(argv)


def _auc(same: list[float], different: list[float]) -> float:
    """P(a different-input distance exceeds a same-input one): 1 separates them fully."""
    s, d = np.asarray(same), np.asarray(different)
    return float((d[:, None] > s[None, :]).mean() + 0.5 * (d[:, None] == s[None, :]).mean())


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from edgeadapt.bench.sources import ReleaseSource
    from edgeadapt.config import SourceConfig
    from edgeadapt.data import CORRUPTIONS
    from edgeadapt.fleet import CorruptionFleet
    from edgeadapt.fleet.statistics_bank import InputSignature, signature_distance
    from edgeadapt.models import create_model

    torch.set_num_threads(1)
    source = ReleaseSource(args.data)
    labels = source.get(CORRUPTIONS[0], 5)[1]
    model = create_model("resnet20", checkpoint=args.checkpoint).eval()
    fleet = CorruptionFleet(
        model=model, config=SourceConfig(), source=source, labels=labels,
        corruptions=tuple(CORRUPTIONS), images_per_domain=args.images_per_domain,
        batch_size=1, severity=5, delta=0.1, seed=args.seed,
    )  # fmt: skip
    shipped = InputSignature(model)
    first_bn: list = []
    model.bn1.register_forward_pre_hook(lambda _m, a: first_bn.append(a[0].detach().double()))
    rounds = []  # (device, domain at the round's start, {signature name: vector})
    r = args.steps_per_round
    total = args.devices * (fleet.batches_per_device // r)
    with torch.no_grad(), tqdm(total=total, desc="rounds") as bar:
        for i in range(args.devices):
            stream = fleet(i).stream
            for start in range(0, len(stream) - r + 1, r):
                first_bn.clear()
                for k in range(start, start + r):
                    model(stream.batch(k)[0])
                y = torch.cat(first_bn)
                mean, square = y.mean((0, 2, 3)), (y * y).mean((0, 2, 3))
                var = (square - mean * mean).clamp_min(1e-12)
                reference = torch.cat([mean / var.sqrt().mean(), 0.5 * var.log()])
                sigs = {"shipped": shipped.take(), "first BN mean and spread": reference}
                rounds.append((i, stream.domain(start), sigs))
                bar.update(1)
    rng = np.random.default_rng(args.seed)
    report = {"args": vars(args), "signatures": {}}
    for name in rounds[0][2]:
        same, new = [], []
        for (d0, c0, s0), (d1, c1, s1) in itertools.pairwise(rounds):
            if d0 == d1:
                (same if c0 == c1 else new).append(signature_distance(s0[name], s1[name]))
        cross_same, cross_other = [], []
        for _ in range(args.pairs):
            a, b = rng.choice(len(rounds), size=2, replace=False)
            (da, ca, sa), (db, cb, sb) = rounds[a], rounds[b]
            if da != db:
                dist = signature_distance(sa[name], sb[name])
                (cross_same if ca == cb else cross_other).append(dist)
        t = args.threshold
        report["signatures"][name] = {
            "consecutive_auc": _auc(same, new),
            "same_percentiles_50_90_99": np.percentile(same, [50, 90, 99]).tolist(),
            "new_percentiles_1_10_50": np.percentile(new, [1, 10, 50]).tolist(),
            "same_below_threshold": float(np.mean(np.asarray(same) < t)),
            "new_below_threshold": float(np.mean(np.asarray(new) < t)),
            "cross_device_auc": _auc(cross_same, cross_other),
            "pairs": {
                "same": len(same),
                "new": len(new),
                "cross_same": len(cross_same),
                "cross_other": len(cross_other),
            },
        }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Input signatures on the fleet benchmark's streams: {args.devices} devices, "
        f"{args.images_per_domain} images per domain (batch 1, class-correlated), rounds of "
        f"{r} frames. 'same'/'new': a device's round against its previous one in the same / a "
        "new corruption; cross-device: rounds of two devices, same corruption or not. "
        f"Threshold {args.threshold}: the share of distances below it.",
        "",
        "| signature | AUC consecutive | AUC cross-device | same p50 / p90 / p99 | new p1 / p10 / "
        "p50 | same < threshold | new < threshold |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for name, s in report["signatures"].items():
        p_same = " / ".join(f"{v:.3f}" for v in s["same_percentiles_50_90_99"])
        p_new = " / ".join(f"{v:.3f}" for v in s["new_percentiles_1_10_50"])
        lines.append(
            f"| {name} | {s['consecutive_auc']:.3f} | {s['cross_device_auc']:.3f} | {p_same} | "
            f"{p_new} | {100 * s['same_below_threshold']:.0f}% | "
            f"{100 * s['new_below_threshold']:.0f}% |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
