"""The arguments the fleet probes share: where the data and the model are, and which devices."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("EDGEADAPT_SHARED", HERE.parents[1].parent / "shared"))


def probe_parser(doc: str, *, devices: int, out: str) -> argparse.ArgumentParser:
    """A parser with --data, --checkpoint, --devices, --images-per-domain, --seed and --out."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/c10c", help="CIFAR-10-C release folder")
    p.add_argument("--checkpoint", default=str(SHARED / "models" / "resnet20_cifar10jpeg.pt"))
    p.add_argument("--devices", type=int, default=devices)
    p.add_argument("--images-per-domain", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / out), help="writes OUT.json and OUT.md")
    return p
