"""The adapter base class: the step loop, reset, episodic mode, freezing, save and load are
written once here; each method implements a few hooks (`configure`, `trainable_parameters`,
`loss`, `after_step`, optionally `predict`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from edgeadapt._atomic import atomic_write_bytes
from edgeadapt.config import AdaptConfig, config_from_dict, to_dict
from edgeadapt.errors import (
    BatchTooSmallError,
    CheckpointMismatchError,
    ConfigError,
    EdgeAdaptError,
    InputError,
)
from edgeadapt.methods._state import (
    architecture_digest,
    batchnorms_on_batch_stats,
    no_running_stat_updates,
    source_statistics,
    tensor_digest,
    weights_digest,
)

__all__ = [
    "ADAPTER_FORMAT",
    "AdaptationDivergedError",
    "Adapter",
    "AdapterNotFoundError",
    "read_adapter_file",
]

ADAPTER_FORMAT = "edgeadapt-adapter/1"


class AdaptationDivergedError(EdgeAdaptError, RuntimeError):
    """The adaptation loss became NaN/Inf; the step was not applied."""


class AdapterNotFoundError(EdgeAdaptError, FileNotFoundError):
    """No saved adapter file at the path given."""


class Adapter(nn.Module):
    """Wraps a copy of a model; `forward` predicts and adapts.

    The caller's model is deep-copied and never modified: `unwrap()` returns it as it was.
    The adapter owns its model's train/eval modes (BN layers on batch statistics must stay in
    train mode), so `.train()` / `.eval()` on the adapter do not reach the model; predict
    without adapting with `with adapter.frozen(): ...`.
    """

    config_type: ClassVar[type[AdaptConfig]] = AdaptConfig

    def __init__(
        self, model: nn.Module, config: AdaptConfig, *, example_input: Tensor | None = None
    ) -> None:
        if not isinstance(config, self.config_type):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_type.__name__}, got {type(config).__name__}"
            )
        super().__init__()
        object.__setattr__(
            self, "_original", model
        )  # not a submodule: unwrap() hands it back untouched
        self.config = config
        self._architecture = architecture_digest(model)
        self._weights = weights_digest(model)
        self.in_channels = _first_conv_in_channels(model)
        if example_input is None:
            gen = torch.Generator().manual_seed(0)
            example_input = torch.randn(2, self.in_channels or 3, 64, 64, generator=gen)
        work = copy.deepcopy(model)
        self.num_classes = _probe_num_classes(work, example_input)
        self.model = self.configure(work, example_input)
        self.generator = torch.Generator().manual_seed(config.seed)
        params = list(self.trainable_parameters())
        self.optimizer = self._build_optimizer(params) if params else None
        self._frozen_depth = 0
        self.steps_taken = 0
        self.snapshot()
        # What each tensor is at wrap time, so a resume file can leave out those nothing has
        # changed since (the frozen model, which the checkpoint already holds).
        self._wrap_digests = {k: tensor_digest(v) for k, v in self.state_dict().items()}

    # ---- hooks -------------------------------------------------------------------------
    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        """Prepare the working copy (freeze, set BN modes, attach modules); return it."""
        return model

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """(loss to minimise or None to skip the update, logits to return)."""
        raise NotImplementedError

    def after_step(self, x: Tensor, logits: Tensor) -> None:
        """Called after each optimiser step (EMA teachers, restores, running means)."""

    def predict(self, x: Tensor) -> Tensor:
        """The prediction without adapting; changes no state."""
        with torch.no_grad(), no_running_stat_updates(self.model):
            return self.model(x)

    def prediction_network(self) -> nn.Module:
        """The network `predict` runs, as a module (what exporters copy): the working model,
        or a teacher where the method predicts with one."""
        return self.model

    def adapter_state_keys(self) -> list[str]:
        """State-dict keys of what adaptation changes: trainable parameters and the buffers of
        the modules that own them."""
        keys = []
        for mod_name, module in self.named_modules():
            own = list(module.named_parameters(recurse=False))
            if not any(p.requires_grad for _, p in own):
                continue
            prefix = f"{mod_name}." if mod_name else ""
            keys += [prefix + n for n, p in own if p.requires_grad]
            keys += [prefix + n for n, b in module.named_buffers(recurse=False) if b is not None]
        return keys + [k for k in self.stream_statistics_keys() if k not in keys]

    def stream_statistics_keys(self) -> list[str]:
        """State-dict keys of the statistics BNs on stream statistics keep: what the stream
        has taught them, so part of what adaptation changes even where nothing trains."""
        from edgeadapt.modules.stream_norm import StreamBatchNorm2d

        return [
            f"{name}.{buffer}"
            for name, m in self.named_modules()
            if isinstance(m, StreamBatchNorm2d)
            for buffer in ("running_mean", "running_var")
        ]

    # ---- the step loop ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self._validate(x)
        if self._frozen_depth:
            return self.predict(x)
        if self.config.episodic:
            self.reset()
        if (
            x.shape[0] < 2
            and self.config.small_batch != "adapt"
            and batchnorms_on_batch_stats(self)
        ):
            if self.config.small_batch == "error":
                raise BatchTooSmallError(
                    f"a batch of {x.shape[0]}: {self.config.method!r} is set to refuse single "
                    "frames (small_batch='error'). Keep the default small_batch='adapt' (with "
                    "a stat_window) to adapt on the stream's statistics, or wrap with "
                    "small_batch='predict' to predict such batches without adapting."
                )
            with source_statistics(self), torch.no_grad():
                return self.predict(x)
        if self.optimizer is None:  # nothing trains; BNs on stream statistics still follow it
            with torch.no_grad():
                return self.model(x)
        logits = x
        for _ in range(self.config.steps):
            logits = self._step(x)
        return logits

    @torch.enable_grad()  # adapting needs gradients even when the caller runs under no_grad
    def _step(self, x: Tensor) -> Tensor:
        loss, logits = self.loss(x)
        if loss is not None:
            if not torch.isfinite(loss.detach()):
                raise AdaptationDivergedError(
                    f"adaptation loss is {loss.item()} at step {self.steps_taken}; the update was not "
                    "applied. Lower the learning rate, or reset() the adapter."
                )
            assert self.optimizer is not None
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.after_step(x, logits)
        self.steps_taken += 1
        return logits.detach()

    # ---- state ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Make the current state the one `reset()` returns to (wrap time, or after warm-up)."""
        self._reset_point = self._capture()

    def reset(self) -> None:
        """Return exactly to the state at wrap time (or the last `snapshot()`)."""
        self._restore(self._reset_point)
        self.steps_taken = 0

    def resume_state(self) -> dict[str, Any]:
        """Everything the stream so far has built, and the reset point: `load_resume_state` on
        an adapter wrapped the same way (same model, config and setup) then goes on exactly
        where this one is, down to optimiser moments and the generator. Tensors and plain
        containers only, so it reads back with `torch.load(..., weights_only=True)`.

        Tensors still bitwise what they were at wrap time, now and in the reset point, are left
        out and listed by digest under "omitted": the adapter that loads this has them from
        its own wrap. So the state holds what adaptation built, not a copy of the checkpoint
        (EcoTTA with its teacher on ResNet-20: 0.17 MB instead of 2.4 MB)."""
        captured = self._capture()
        omitted = {
            k: digest
            for k, digest in self._wrap_digests.items()
            if k in captured["state"]
            and tensor_digest(captured["state"][k]) == digest
            and tensor_digest(self._reset_point["state"][k]) == digest
        }
        for k in omitted:
            del captured["state"][k]
        # Copy only what the file keeps of the reset point (the frozen model is most of it).
        kept = {k: v for k, v in self._reset_point["state"].items() if k not in omitted}
        reset_point = copy.deepcopy({**self._reset_point, "state": kept})
        return {
            "method": self.config.method,
            "config": json.dumps(to_dict(self.config), sort_keys=True),
            "weights": self._weights,
            **captured,
            "steps_taken": self.steps_taken,
            "reset_point": reset_point,
            "omitted": omitted,
        }

    def load_resume_state(self, saved: dict[str, Any]) -> None:
        """Continue from `resume_state()`. Refuses, changing nothing, state saved from another
        method, config or frozen model, or before a setup step this adapter has had (or the
        reverse: EATA's Fisher, for one, adds buffers)."""
        config = json.dumps(to_dict(self.config), sort_keys=True)
        if saved.get("method") != self.config.method or saved.get("config") != config:
            raise CheckpointMismatchError(
                f"the saved state is of a {saved.get('method')!r} adapter with config "
                f"{saved.get('config')}; this one is {self.config.method!r} with {config}"
            )
        if saved.get("weights") != self._weights:
            raise CheckpointMismatchError(
                "the saved state was built on other frozen weights; wrap the model it came from"
            )
        own = self.state_dict()
        # Files written before tensors were left out have no "omitted": they hold everything.
        omitted = saved.get("omitted", {})
        differ = [k for k, d in omitted.items() if k not in own or tensor_digest(own[k]) != d]
        if differ:
            raise CheckpointMismatchError(
                f"the saved state leaves out tensors it had unchanged since wrap, and this "
                f"adapter's differ: {sorted(differ)[:5]}; resume on an adapter wrapped from the "
                "same model with the same config and setup, with no steps taken"
            )
        unchanged = {k: own[k].detach().clone() for k in omitted}
        state = {**unchanged, **saved["state"]}
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise CheckpointMismatchError(
                f"the saved state has other tensors than this adapter: missing "
                f"{sorted(set(own) - set(state))[:5]}, unexpected {sorted(set(state) - set(own))[:5]}; "
                "run the same setup (warm-up, compute_fisher) before loading it"
            )
        self._restore({**saved, "state": state})
        self.steps_taken = int(saved["steps_taken"])
        reset_point = copy.deepcopy(saved["reset_point"])
        self._reset_point = {**reset_point, "state": {**unchanged, **reset_point["state"]}}

    def _capture(self) -> dict[str, Any]:
        """Copies of all the adapter's state: tensors, optimiser, generator, Python-side extras."""
        return {
            "state": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None,
            "generator": self.generator.get_state(),
            "extra": copy.deepcopy(self._extra_state()),
        }

    def _restore(self, captured: dict[str, Any]) -> None:
        """Load what `_capture` returned; it stays untouched (it may be restored again)."""
        with torch.no_grad():
            for k, v in self.state_dict(keep_vars=True).items():
                v.copy_(captured["state"][k])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(captured["optimizer"]))
        self.generator.set_state(captured["generator"])
        self._load_extra_state(copy.deepcopy(captured["extra"]))

    def _extra_state(self) -> dict[str, Any]:
        """Python-side state a method keeps outside tensors (none by default)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @contextlib.contextmanager
    def frozen(self) -> Iterator[Adapter]:
        """Inside this block the adapter predicts without adapting or changing any state."""
        self._frozen_depth += 1
        try:
            yield self
        finally:
            self._frozen_depth -= 1

    def train(self, mode: bool = True) -> Adapter:
        self.training = mode  # deliberately not propagated: see the class docstring
        return self

    def unwrap(self) -> nn.Module:
        """The caller's original model, unchanged."""
        return self._original

    def adapter_state_dict(self) -> dict[str, Tensor]:
        state = self.state_dict()
        return {k: state[k].detach().clone() for k in self.adapter_state_keys()}

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        own = self.state_dict(keep_vars=True)
        expected = set(self.adapter_state_keys())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        bad_shape = [
            k for k in expected & set(state) if tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or bad_shape:
            raise CheckpointMismatchError(
                f"adapter state does not fit this {self.config.method!r} adapter: "
                f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
                f"wrong shape {bad_shape[:5]} ({len(bad_shape)}). Was it saved from another model or config?"
            )
        with torch.no_grad():
            for k in expected:
                own[k].copy_(state[k])

    def save(self, path: str | Path) -> Path:
        """Write the adapter weights and config atomically to `path`, and the config as JSON to
        `path` + '.json' for people to read."""
        path = Path(path)
        config_json = json.dumps(to_dict(self.config), indent=2, sort_keys=True)
        payload = {
            "format": ADAPTER_FORMAT,
            "method": self.config.method,
            "config": config_json,
            "architecture": self._architecture,
            "weights": self._weights,
            "state": self.adapter_state_dict(),
            # What the adapter started from (edgeadapt.setup_data): plain types, so a
            # weights_only load reads it.
            "setup": getattr(self, "setup_record", None),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, buf.getvalue())
        atomic_write_bytes(path.with_name(path.name + ".json"), config_json.encode() + b"\n")
        return path

    def load(
        self, path: str | Path, *, strict_weights: bool = True, as_reset_point: bool = True
    ) -> None:
        """Load adapter weights saved by `save`, refusing a file made for another model, method
        or config. With `as_reset_point`, `reset()` returns to the loaded state afterwards."""
        payload = read_adapter_file(path)
        if payload["method"] != self.config.method:
            raise CheckpointMismatchError(
                f"{path} holds a {payload['method']!r} adapter; this one is {self.config.method!r}"
            )
        if payload["architecture"] != self._architecture:
            raise CheckpointMismatchError(
                f"{path} was saved for a model of another architecture (its state names or shapes "
                "differ); wrap the model it was trained with"
            )
        if strict_weights and payload["weights"] != self._weights:
            raise CheckpointMismatchError(
                f"{path} was trained on other frozen weights of this architecture; load the matching "
                "checkpoint first, or pass strict_weights=False to load it anyway"
            )
        saved = config_from_dict(json.loads(payload["config"]))
        if saved != self.config:
            diff = {
                k: (v, getattr(self.config, k))
                for k, v in vars(saved).items()
                if getattr(self.config, k) != v
            }
            raise CheckpointMismatchError(
                f"{path} was saved with other settings {{field: (saved, here)}} = {diff}; "
                "wrap with the saved config (edgeadapt.load_adapter does)"
            )
        self.load_adapter_state_dict(payload["state"])
        self.setup_record = payload.get("setup")  # files from before it was saved have none
        if as_reset_point:
            self.snapshot()

    # ---- internals -----------------------------------------------------------------------
    def _build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(
                params, lr=c.lr, betas=(0.9, 0.999), weight_decay=c.weight_decay
            )
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _validate(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise InputError(f"expected a torch.Tensor batch, got {type(x).__name__}")
        if x.ndim != 4:
            hint = "; add the batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
            raise InputError(
                f"expected a batch shaped (N, C, H, W), got shape {tuple(x.shape)}{hint}"
            )
        if x.shape[0] == 0:
            raise InputError("got an empty batch (N = 0); skip it instead of calling the adapter")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise InputError(
                f"the model takes {self.in_channels} input channels, the batch has {x.shape[1]} (shape {tuple(x.shape)})"
            )
        dtype = next(self._original.parameters()).dtype
        if x.dtype != dtype:
            hint = (
                " (uint8 pixels: x.float() / 255, then normalise)"
                if not x.is_floating_point()
                else ""
            )
            raise InputError(
                f"the model runs in {dtype}, the batch is {x.dtype}; convert it with x.to({dtype}){hint}"
            )
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:8].tolist()
            raise InputError(
                f"NaN or Inf pixels in samples {bad} of the batch; one such sample would corrupt the "
                "adapted weights. Drop or repair those frames first."
            )


def read_adapter_file(path: str | Path) -> dict[str, Any]:
    """Load and validate a saved adapter file safely (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise AdapterNotFoundError(f"no adapter file at {path}; write one with adapter.save(path)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncation, not a torch file
        raise CheckpointMismatchError(
            f"{path} is not a readable adapter file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not an edgeadapt adapter file (expected format {ADAPTER_FORMAT!r})"
        )
    return payload


def _first_conv_in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def _probe_num_classes(model: nn.Module, example: Tensor) -> int:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise ConfigError(
            f"the model must return logits shaped (N, classes); it returned {getattr(out, 'shape', type(out))}"
        )
    return int(out.shape[1])
