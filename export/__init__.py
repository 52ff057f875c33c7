"""edgeadapt.export: ONNX and ExecuTorch programs for memory-bounded targets.

Inference export, the adaptation step as an ExecuTorch training program, int8 frozen
backbones and device-profile fit checks are being built here (see the project's export
issue); nothing is exported yet.
"""

__all__: list[str] = []
