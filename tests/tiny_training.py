"""What the training-program export tests share: the tiny EcoTTA adapter and its input, and
made-up MCU profiles with the banks a test needs."""

from __future__ import annotations

import torch

import edgeadapt
from edgeadapt.export import load_profile

X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))


def tiny_ecotta():
    """tiny_resnet wrapped by EcoTTA (eval frozen BNs, plain SGD), the same each call."""
    torch.manual_seed(0)
    config = edgeadapt.EcoTTAConfig(
        frozen_bn="eval", optimizer="sgd", momentum=0.0, lr=5e-2, entropy_margin=10.0
    )
    return edgeadapt.wrap(
        edgeadapt.create_model("tiny_resnet"), config, example_input=X.repeat(2, 1, 1, 1)
    )


def made_up_mcu(tmp_path, banks, name: str = "made_up"):
    """The nRF52840's profile with its RAM replaced by `banks`: (name, bytes) or (name,
    bytes, address or None, reserved bytes) each."""
    text = load_profile("nrf52840").path.read_text()
    head, _, tail = text.partition("[[ram]]")
    tail = tail[tail.index("\n[", 1) :]  # drop the profile's own bank
    ram = ""
    for bank in banks:
        bank_name, size = bank[:2]
        address, reserved = bank[2:] if len(bank) == 4 else (None, 0)
        ram += f'[[ram]]\nname = "{bank_name}"\nbytes = {size}\nreserved_bytes = {reserved}\n'
        ram += f"address = {address}\n\n" if address is not None else "\n"
    path = tmp_path / f"{name}.toml"
    path.write_text(head + ram + tail.lstrip("\n"))
    return load_profile(path)
