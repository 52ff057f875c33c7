"""The continual test-time adaptation benchmark: protocols, domain sources, the stream
runner, reports, and the embedded demo. The `edgeadapt bench` / `demo` commands are thin
shells over `run_benchmark` and `run_demo`."""

from edgeadapt.bench.protocols import PROTOCOLS, Segment, make_protocol
from edgeadapt.bench.runner import MethodResult, run_benchmark, run_stream
from edgeadapt.bench.sources import DomainSource, GeneratedSource, ReleaseSource

__all__ = [
    "PROTOCOLS",
    "DomainSource",
    "GeneratedSource",
    "MethodResult",
    "ReleaseSource",
    "Segment",
    "make_protocol",
    "run_benchmark",
    "run_stream",
]
