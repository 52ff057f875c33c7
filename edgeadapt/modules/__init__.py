"""Building blocks: the memory-lean frozen path, meta networks and partitioning."""

from edgeadapt.modules.lean import (
    LeanBatchNorm2d,
    LeanConv2d,
    LeanReLU,
    LeanReLU6,
    make_lean,
    pack_bits,
    unpack_bits,
)
from edgeadapt.modules.meta import MetaConvBlock, MetaPart
from edgeadapt.modules.partition import Part, attach_meta_parts, auto_parts

__all__ = [
    "LeanBatchNorm2d",
    "LeanConv2d",
    "LeanReLU",
    "LeanReLU6",
    "MetaConvBlock",
    "MetaPart",
    "Part",
    "attach_meta_parts",
    "auto_parts",
    "make_lean",
    "pack_bits",
    "unpack_bits",
]
