"""The adaptation methods, one file each; importing this package registers them all."""

from edgeadapt.methods import cotta, eata, ecotta, norm, rotta, sar, source, tent  # noqa: F401  (registers)
from edgeadapt.methods.base import AdaptationDivergedError, Adapter
from edgeadapt.methods.cotta import CoTTAAdapter
from edgeadapt.methods.eata import EATAAdapter
from edgeadapt.methods.ecotta import EcoTTAAdapter
from edgeadapt.methods.norm import NormAdapter
from edgeadapt.methods.rotta import RoTTAAdapter
from edgeadapt.methods.sar import SARAdapter
from edgeadapt.methods.source import SourceAdapter
from edgeadapt.methods.tent import TentAdapter

__all__ = [
    "AdaptationDivergedError",
    "Adapter",
    "CoTTAAdapter",
    "EATAAdapter",
    "EcoTTAAdapter",
    "NormAdapter",
    "RoTTAAdapter",
    "SARAdapter",
    "SourceAdapter",
    "TentAdapter",
]
