"""edgeadapt.export: verified ONNX / ExecuTorch programs for memory-bounded targets.

- `to_onnx`, `to_executorch`: an adapter's (or a plain model's) prediction, run by the
  target runtime against eager before it is written; `ExportReport` says what came out.
- `to_executorch_int8`: int8 frozen backbone (PT2E; XNNPACK or portable kernels), fp32 meta
  networks.
- `to_training_program` / `TrainingRunner`: one EcoTTA or Tent adaptation step as an
  ExecuTorch training program (fp32 or int8 frozen weights), stepped with ExecuTorch's SGD;
  its backward keeps only what it needs (`training_ops`, `training_passes`).
- `load_profile`, `list_profiles`, `check_fit`: device profiles (`devices/*.toml`) and
  whether a program fits them; `device=` at export plans the arena into the device's RAM
  banks (`memory_plan`).
- `verify_bundled_program`: every ExecuTorch export also writes a bundled program (`.bpte`:
  the program, a test input and PyTorch's expected outputs) for on-target verification.

executorch, onnx and onnxruntime are imported only inside the functions that use them.
"""

from edgeadapt.export.api import ExportRequest, export_program
from edgeadapt.export.bundled import verify_bundled_program, write_bundled_program
from edgeadapt.export.devices import DeviceProfile, MemoryBank, list_profiles, load_profile
from edgeadapt.export.errors import (
    DeviceProfileError,
    DoesNotFitError,
    ExportError,
    ProgramFileError,
    UnknownDeviceError,
    UnsupportedExportError,
    VerificationError,
)
from edgeadapt.export.executorch_program import ExecuTorchRunner, to_executorch
from edgeadapt.export.fit import FitResult, check_fit, require_fit
from edgeadapt.export.graph import inference_module
from edgeadapt.export.onnx_program import OnnxRunner, to_onnx
from edgeadapt.export.quantize import to_executorch_int8
from edgeadapt.export.report import ExportReport
from edgeadapt.export.training import TrainingRunner, to_training_program

__all__ = [
    "DeviceProfile",
    "DeviceProfileError",
    "DoesNotFitError",
    "ExecuTorchRunner",
    "ExportError",
    "ExportReport",
    "ExportRequest",
    "FitResult",
    "MemoryBank",
    "OnnxRunner",
    "ProgramFileError",
    "TrainingRunner",
    "UnknownDeviceError",
    "UnsupportedExportError",
    "VerificationError",
    "check_fit",
    "export_program",
    "inference_module",
    "list_profiles",
    "load_profile",
    "require_fit",
    "to_executorch",
    "to_executorch_int8",
    "to_onnx",
    "to_training_program",
    "verify_bundled_program",
    "write_bundled_program",
]
