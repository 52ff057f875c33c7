"""One frozen, keyword-only config per method. The config's type picks the method.

Every config is plain data so it round-trips through JSON next to the adapter weights
(`to_dict` / `config_from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from edgeadapt.errors import ConfigError

__all__ = [
    "AdaptConfig",
    "CoTTAConfig",
    "EATAConfig",
    "EcoTTAConfig",
    "NormConfig",
    "RoTTAConfig",
    "SARConfig",
    "SourceConfig",
    "TentConfig",
    "config_from_dict",
    "settings_from_json",
    "to_dict",
]


@dataclass(frozen=True, kw_only=True)
class AdaptConfig:
    """Settings every method shares."""

    method: str = dataclasses.field(default="", init=False)  # set by each subclass
    steps: int = 1  # adaptation steps per incoming batch
    episodic: bool = False  # reset to the wrap-time state before every batch
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    seed: int = 0  # seeds the adapter's own generator (augmentations, restores)
    # Samples the test statistics of BNs on test statistics span (edgeadapt.modules.stream_norm):
    # a batch of N mixes its own statistics into the stream's with weight min(1, N / window),
    # so a batch of `stat_window` or more uses its own alone (the published rule) and single
    # frames adapt too. None: each batch's own statistics only, which needs 2 samples or more.
    # A pair (first, last) grows the window geometrically from the first BN to the last in
    # forward order (edgeadapt.modules.stream_norm.stream_windows).
    # (512, 4096) was chosen at batch 1 on the four extra corruptions (tune_stream.md).
    stat_window: int | tuple[int, int] | None = (512, 4096)
    # A batch of at least this many samples normalises with its own statistics alone, as the
    # published methods do (None: every batch mixes in by stat_window). The long windows that
    # single frames need lag a continual stream that batches of 64 follow on their own:
    # 2.6 points at batch 64 (tune_stream_b64.md).
    own_statistics_from: int | None = 64
    # A batch of one where BNs use test statistics: "adapt" (on the stream's statistics),
    # "predict" (the current model's prediction on the stream's statistics as they are, no
    # adapting, no state change), "error" (BatchTooSmallError). With stat_window None,
    # "adapt" is not possible.
    small_batch: Literal["adapt", "error", "predict"] = "adapt"

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps must be >= 1")
        _check(
            self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"
        )
        _check(
            self.optimizer in ("sgd", "adam"),
            f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}",
        )
        _check(
            self.small_batch in ("adapt", "error", "predict"),
            "small_batch must be 'adapt', 'error' or 'predict'",
        )
        if isinstance(self.stat_window, list):  # from JSON
            object.__setattr__(self, "stat_window", tuple(self.stat_window))
        window = self.stat_window
        sizes = window if isinstance(window, tuple) else (window,)
        _check(
            window is None
            or (
                len(sizes) in (1, 2)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)
            ),
            "stat_window must be a number of samples >= 1, a pair (first, last) of them, or "
            f"None; got {window!r}",
        )
        _check(
            self.own_statistics_from is None
            or (
                isinstance(self.own_statistics_from, int)
                and not isinstance(self.own_statistics_from, bool)
                and self.own_statistics_from >= 2
            ),
            "own_statistics_from must be a batch size >= 2 (a frame's own statistics erase "
            f"it) or None; got {self.own_statistics_from!r}",
        )
        _check(
            self.stat_window is not None or self.small_batch != "adapt",
            "stat_window=None normalises every batch with its own statistics, which a batch of "
            "one cannot give: set small_batch='predict' or 'error', or keep a stat_window",
        )
        _check(0 <= self.momentum < 1, "momentum must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")


@dataclass(frozen=True, kw_only=True)
class SourceConfig(AdaptConfig):
    """No adaptation: the source model as shipped."""

    method: str = dataclasses.field(default="source", init=False)


@dataclass(frozen=True, kw_only=True)
class NormConfig(AdaptConfig):
    """BN layers normalise with the statistics of each test batch (Schneider et al. 2020)."""

    method: str = dataclasses.field(default="norm", init=False)


@dataclass(frozen=True, kw_only=True)
class TentConfig(AdaptConfig):
    """Entropy minimisation over BN affine parameters (Wang et al. 2021)."""

    method: str = dataclasses.field(default="tent", init=False)
    optimizer: Literal["sgd", "adam"] = "adam"  # Tent's CIFAR setting
    # Memory-lean frozen convs and 1-bit ReLU masks (edgeadapt.modules.lean). Off by default:
    # the published method keeps PyTorch's usual activations.
    lean: bool = False


@dataclass(frozen=True, kw_only=True)
class EATAConfig(AdaptConfig):
    """Tent with sample selection and a Fisher anti-forgetting term (Niu et al. 2022)."""

    method: str = dataclasses.field(default="eata", init=False)
    lr: float = 5e-3
    lean: bool = False  # as TentConfig.lean
    entropy_margin: float = 0.4  # keep samples with entropy < margin · ln(C)
    redundancy_margin: float = (
        0.4  # keep samples whose |cosine| to the running mean prob. is below this
    )
    fisher_alpha: float = 2000.0  # weight of the Fisher regulariser (needs compute_fisher)
    prob_ema: float = 0.9  # momentum of the running mean of selected probabilities

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.entropy_margin > 0, "entropy_margin must be > 0")
        _check(0 <= self.redundancy_margin <= 2, "redundancy_margin must be in [0, 2]")
        _check(self.fisher_alpha >= 0, "fisher_alpha must be >= 0")
        _check(0 <= self.prob_ema < 1, "prob_ema must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class _InputStatistics:
    """For methods that augment their inputs. Augmentations act on pixels in [0, 1], so inputs
    are un-normalised first when the caller's normalisation is given (None: inputs are already
    in [0, 1])."""

    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    def _check_input_statistics(self) -> None:
        _check(
            (self.input_mean is None) == (self.input_std is None),
            "give input_mean and input_std together",
        )
        for name in ("input_mean", "input_std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))


@dataclass(frozen=True, kw_only=True)
class CoTTAConfig(AdaptConfig, _InputStatistics):
    """Mean teacher with augmentation-averaged pseudo-labels and stochastic restore (Wang et al. 2022)."""

    method: str = dataclasses.field(default="cotta", init=False)
    optimizer: Literal["sgd", "adam"] = "adam"
    teacher_momentum: float = 0.999  # EMA of the student into the teacher
    restore_prob: float = 0.01  # chance per weight element to return to the source value each step
    confidence_threshold: float = 0.92  # below this anchor confidence, average augmentations
    augmentations: int = 32  # augmented views averaged for a pseudo-label
    # Views the teacher sees in one forward (each view keeps its own BN batch statistics).
    # 1 keeps the peak memory of one batch, as an edge device needs; all 32 at once is much
    # faster on a big CPU or a GPU and gives the same pseudo-labels up to float rounding.
    views_per_pass: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_input_statistics()
        _check(0 <= self.teacher_momentum < 1, "teacher_momentum must be in [0, 1)")
        _check(0 <= self.restore_prob <= 1, "restore_prob must be in [0, 1]")
        _check(0 <= self.confidence_threshold <= 1, "confidence_threshold must be in [0, 1]")
        _check(self.augmentations >= 0, "augmentations must be >= 0")
        _check(self.views_per_pass >= 1, "views_per_pass must be >= 1")


# EcoTTAConfig.device(): what differs from the defaults on a device (chosen on the four extra
# corruptions at batch 1: benchmarks/cifar10c/tune_stream.md).
DEVICE_SETTINGS: dict[str, Any] = {
    # Frozen BNs on the stream's statistics, as the library default: on source statistics
    # ("eval") the meta networks alone must undo the shift, and at batch 1 on the benchmark's
    # 15 corruptions that collapsed to one class (85.7% error, record_stream_continual*.md).
    "frozen_bn": "batch",
    "frozen_weights": "int8",
    "optimizer": "sgd",
    # Plain SGD's step on the extra corruptions at batch 1 (tune_stream.md, i.i.d. / correlated
    # error): 1e-4 23.2 / 28.5, 3e-4 22.9 / 27.5, 1e-3 23.4 / 25.5, 3e-3 24.8 / 23.3. 1e-3: the
    # largest step that loses no more than half a point on the i.i.d. stream (3e-3 loses 1.4
    # there). Its drift over 10 rounds: record_stream_long-term*.md.
    "lr": 1e-3,
    # The device applies plain SGD to the program's gradients (docs/bridge-protocol.md §5:
    # no momentum state on the device), so the eager twin the export check and the benchmark
    # run must too: with the default 0.9 they stepped about 10x further than a device does.
    "momentum": 0.0,
}

# EcoTTAConfig.device_small(): the device configuration whose ResNet-20 step fits an
# STM32F746's 320 KB of SRAM with int8 kept activations
# (benchmarks/firmware/small_sram/results.md).
SMALL_SRAM_SETTINGS: dict[str, Any] = {
    # Meta networks on stages 2 and 3 only, one part each: the step keeps none of stage 1's
    # maps, the network's largest. Three parts there, or fp32 kept activations, do not fit
    # (benchmarks/firmware/small_sram/results.md).
    "skip_stages": 1,
    "num_parts": 2,
    # Plain SGD's step for this partition on the extra corruptions at batch 1 (tune_stream.md,
    # i.i.d. / correlated error): 3e-5 23.8 / 28.3, 1e-4 23.7 / 28.2, 3e-4 23.7 / 27.9, 1e-3
    # 26.5 / 29.3 (it drifts). The full device configuration's 1e-3 is too large for two parts.
    "lr": 3e-4,
}


@dataclass(frozen=True, kw_only=True)
class EcoTTAConfig(AdaptConfig, _InputStatistics):
    """Meta networks on K parts of a frozen backbone (Song et al. 2023)."""

    method: str = dataclasses.field(default="ecotta", init=False)
    optimizer: Literal["sgd", "adam"] = "adam"
    # lr, reg_weight and frozen_bn were chosen on the four extra CIFAR-10-C corruptions, never on
    # the 15 of the benchmark (benchmarks/cifar10c/tune*.md): 1e-3 and 3e-3 drifted, 3e-4 did not.
    lr: float = 3e-4
    # Parts of the frozen network, in forward order. Each part is one module name or a tuple
    # of consecutive sibling names inside an nn.Sequential. None: split ResNet-style blocks
    # automatically into `num_parts` groups.
    parts: tuple[str | tuple[str, ...], ...] | None = None
    # K, used when parts is None; None: 4, or one part per block on networks with fewer blocks.
    num_parts: int | None = None
    # Used when parts is None: the first N stages of blocks get no meta network. They still run
    # (their BNs on the stream's statistics), but the step keeps none of their maps, which are
    # the network's largest: what fits ResNet-20's step into an STM32F746's 320 KB
    # (`device_small()`, benchmarks/firmware/small_sram/results.md).
    skip_stages: int = 0
    entropy_margin: float = 0.4  # adapt on samples with entropy < margin · ln(C)
    # λ of the self-distilled L1 term, which here is the mean over the K parts (the paper sums
    # them: its λ = 0.5 at K = 4 is λ = 2 here). 5 was chosen on the extra corruptions over 1280
    # steps: 0.5 drifted back up after ~700 steps, 2 and 5 did not; 5 was the flattest.
    reg_weight: float = 5.0
    meta_kernel_size: int = 1  # kernel of the meta conv block (1 or 3)
    # "batch": the frozen BNs normalise with test-batch statistics (as `norm` does; with
    # `recompute` this keeps no more memory, since whole parts are recomputed). "eval": they keep
    # the source statistics and fold into the lean frozen path (less memory without recompute).
    frozen_bn: Literal["eval", "batch"] = "batch"
    # Precision of the frozen convolutions' weights: "int8" rounds them, as the exporter stores
    # them for a device (symmetric, one scale per output channel), so the eager adapter runs
    # what the device runs; the meta networks stay fp32 either way.
    frozen_weights: Literal["fp32", "int8"] = "fp32"
    lean: bool = True  # memory-lean frozen path (keeps only 1-bit ReLU masks for backward)
    # Recompute each part in backward, keeping only its input: less memory for one more
    # forward of the frozen layers per step.
    recompute: bool = True
    # Anti-drift for long streams (not in the paper; off by default). After each step every
    # meta-network weight returns to its warmed-up value with this probability (CoTTA's
    # stochastic restore).
    restore_prob: float = 0.0
    # Weigh each kept sample by exp(H0 - H), as EATA does: confident samples count more.
    entropy_weighting: bool = False
    # A mean teacher over the meta networks (not in the paper; None: off). The meta networks
    # then learn from the soft pseudo-labels of an exponential moving average of themselves
    # (this momentum) instead of from their own entropy; the self-distilled term stays, and
    # predictions come from the teacher. Costs forwards, not memory kept for backward.
    teacher_momentum: float | None = None
    # With the teacher: augmented views of each batch it also predicts (one forward each), and
    # per sample the more confident of its plain and its view-averaged prediction becomes the
    # target. The views smooth: that helps on noise and misleads on blur, and the pick keeps
    # whichever is surer. Give input_mean / input_std when inputs are normalised.
    teacher_views: int = 0

    @classmethod
    def device(cls, **changes: Any) -> EcoTTAConfig:
        """EcoTTA as a device runs it, and as `edgeadapt export --program adapt` writes it:
        frozen BNs and meta networks on stream statistics (`stat_window`; the program keeps
        them as buffers it updates), the frozen weights int8, the meta networks fp32, and SGD
        (the optimiser the device applies to the program's gradients). `changes` override."""
        return cls(**{**DEVICE_SETTINGS, **changes})

    @classmethod
    def device_small(cls, **changes: Any) -> EcoTTAConfig:
        """`device()` for a part with about 320 KB of SRAM: meta networks on the stages after
        the first only, two parts, and their own SGD step (`SMALL_SRAM_SETTINGS`). ResNet-20's
        step then fits an STM32F746 when exported with int8 kept activations; it adapts less
        than `device()` (benchmarks/firmware/small_sram/results.md). `changes` override."""
        return cls(**{**DEVICE_SETTINGS, **SMALL_SRAM_SETTINGS, **changes})

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_input_statistics()
        _check(
            self.teacher_momentum is None or 0 <= self.teacher_momentum < 1,
            "teacher_momentum must be None (no teacher) or in [0, 1)",
        )
        _check(self.teacher_views >= 0, "teacher_views must be >= 0")
        _check(
            self.teacher_views == 0 or self.teacher_momentum is not None,
            "teacher_views needs the teacher: set teacher_momentum (e.g. 0.999)",
        )
        _check(0.0 <= self.restore_prob <= 1.0, "restore_prob must be in [0, 1]")
        _check(self.num_parts is None or self.num_parts >= 1, "num_parts must be >= 1")
        _check(self.skip_stages >= 0, "skip_stages must be >= 0")
        _check(
            self.skip_stages == 0 or self.parts is None,
            "skip_stages applies to the automatic split: with parts given, name only the parts "
            "that get meta networks",
        )
        _check(self.entropy_margin > 0, "entropy_margin must be > 0")
        _check(self.reg_weight >= 0, "reg_weight must be >= 0")
        _check(self.meta_kernel_size in (1, 3), "meta_kernel_size must be 1 or 3")
        _check(self.frozen_bn in ("eval", "batch"), "frozen_bn must be 'eval' or 'batch'")
        _check(self.frozen_weights in ("fp32", "int8"), "frozen_weights must be 'fp32' or 'int8'")
        if self.parts is not None:
            _check(len(self.parts) >= 1, "parts must name at least one part")
            object.__setattr__(
                self, "parts", tuple(p if isinstance(p, str) else tuple(p) for p in self.parts)
            )


@dataclass(frozen=True, kw_only=True)
class RoTTAConfig(AdaptConfig, _InputStatistics):
    """Robust BN, a category-balanced memory bank and a time-reweighted mean teacher
    (Yuan et al. 2023): made for correlated streams of small batches."""

    method: str = dataclasses.field(default="rotta", init=False)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    # Robust BN: each update batch from the bank moves the BN statistics by this weight
    # (RoTTA's α); predictions normalise with the statistics as they stand.
    robust_momentum: float = 0.05
    teacher_momentum: float = 0.999  # the teacher moves 1 − this toward the student per update
    memory_size: int = 64  # samples the category-balanced bank holds
    update_every: int = 64  # samples between updates (each trains on the whole bank)
    lambda_t: float = 1.0  # weight of a stored sample's age in the bank's eviction score
    lambda_u: float = 1.0  # weight of its uncertainty (entropy / ln C)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_input_statistics()
        _check(0 < self.robust_momentum <= 1, "robust_momentum must be in (0, 1]")
        _check(0 <= self.teacher_momentum < 1, "teacher_momentum must be in [0, 1)")
        _check(self.memory_size >= 1, "memory_size must be >= 1")
        _check(self.update_every >= 1, "update_every must be >= 1")
        _check(self.lambda_t >= 0 and self.lambda_u >= 0, "lambda_t and lambda_u must be >= 0")


@dataclass(frozen=True, kw_only=True)
class SARConfig(AdaptConfig):
    """Sharpness-aware, reliable entropy minimisation with model recovery (Niu et al. 2023)."""

    method: str = dataclasses.field(default="sar", init=False)
    # SGD with momentum, as the paper. 3e-5 was chosen at batch 1 on the four extra corruptions
    # (tune_stream.md: 1e-4 was 1.6 points worse on the correlated stream).
    lr: float = 3e-5
    lean: bool = False  # as TentConfig.lean
    entropy_margin: float = 0.4  # adapt on samples with entropy < margin · ln(C)
    rho: float = 0.05  # radius of the sharpness-aware perturbation
    # Model recovery: when the moving average of the filtered entropy after the perturbed step
    # falls below this, the model is taken to have collapsed and is reset.
    reset_below: float = 0.2
    loss_ema: float = 0.9  # momentum of that moving average

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.entropy_margin > 0, "entropy_margin must be > 0")
        _check(self.rho >= 0 and math.isfinite(self.rho), "rho must be a finite number >= 0")
        _check(self.reset_below >= 0, "reset_below must be >= 0")
        _check(0 <= self.loss_ema < 1, "loss_ema must be in [0, 1)")


_CONFIG_TYPES: dict[str, type[AdaptConfig]] = {
    "source": SourceConfig,
    "norm": NormConfig,
    "tent": TentConfig,
    "eata": EATAConfig,
    "cotta": CoTTAConfig,
    "ecotta": EcoTTAConfig,
    "rotta": RoTTAConfig,
    "sar": SARConfig,
}


def to_dict(config: AdaptConfig) -> dict[str, Any]:
    """Plain JSON-able dict, including the method name."""
    out = dataclasses.asdict(config)
    if out.get("parts") is not None:
        out["parts"] = [p if isinstance(p, str) else list(p) for p in out["parts"]]
    return out


def config_from_dict(data: dict[str, Any]) -> AdaptConfig:
    """Inverse of `to_dict`; unknown methods or fields are a ConfigError."""
    data = dict(data)
    method = data.pop("method", None)
    cls = _CONFIG_TYPES.get(method)  # type: ignore[arg-type]
    if cls is None:
        raise ConfigError(f"unknown method {method!r}; known: {sorted(_CONFIG_TYPES)}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no fields {sorted(unknown)}; fields: {sorted(names)}"
        )
    if data.get("parts") is not None:
        data["parts"] = tuple(p if isinstance(p, str) else tuple(p) for p in data["parts"])
    return cls(**data)


def settings_from_json(text: str | None, option: str) -> dict[str, Any]:
    """The JSON object a command-line `option` (e.g. "--settings") was given; {} for none.
    ConfigError naming the problem for text that is not JSON or not an object."""
    if not text:
        return {}
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not JSON ({exc}); e.g. '{{\"lr\": 0.001}}'") from exc
    if not isinstance(fields, dict):
        raise ConfigError(f"{option} must be a JSON object of settings, got {text!r}")
    return fields


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
