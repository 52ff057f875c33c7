"""Optional dependencies: which extra brings which package, and a typed error when one is missing.

The core install adapts with torch and numpy alone; the rest is opt-in so that an edge app
that only adapts does not carry an exporter, a video decoder and a plotting stack.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

from edgeadapt.errors import MissingExtraError

F = TypeVar("F", bound=Callable[..., Any])

# top-level import name -> (pip distribution, extra that brings it)
EXTRA_OF: dict[str, tuple[str, str]] = {
    "executorch": ("executorch", "export"),
    "torchao": ("executorch", "export"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "av": ("av", "video"),
    "serial": ("pyserial", "bridge"),
    "scipy": ("scipy", "bench"),
    "sklearn": ("scikit-learn", "bench"),
    "matplotlib": ("matplotlib", "bench"),
    "ray": ("ray", "sweep"),
}


def missing_extra_error(module: str, feature: str | None = None) -> MissingExtraError:
    """The error for `module` (an import name) not being installed."""
    top = module.split(".")[0]
    dist, extra = EXTRA_OF[top]
    needed = f"{feature} needs {dist}" if feature else f"{dist} is needed here"
    return MissingExtraError(
        f"{needed}, which is not installed: it comes with the {extra!r} extra, "
        f'pip install "edgeadapt[{extra}]" (or "edgeadapt[all]")'
    )


def require(module: str, feature: str | None = None) -> ModuleType:
    """Import `module` or raise MissingExtraError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own dependencies is broken
        raise missing_extra_error(module, feature) from exc


def as_missing_extra(exc: BaseException) -> MissingExtraError | None:
    """The MissingExtraError an import failure stands for, or None when it is not one of ours."""
    if isinstance(exc, MissingExtraError):
        return exc
    top = exc.name.split(".")[0] if isinstance(exc, ModuleNotFoundError) and exc.name else ""
    if top in EXTRA_OF:
        return missing_extra_error(top)
    return None


def needs(*modules: str, feature: str) -> Callable[[F], F]:
    """Decorate a public entry point: it checks its extra's packages before doing anything."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for module in modules:
                require(module, feature)
            return fn(*args, **kwargs)

        return cast(F, checked)

    return decorate
