"""RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU, Yuan et al.,
CVPR 2023, section 3.3): a bank of test frames, each kept under its pseudo-label.

A new frame of pseudo-label k enters while k holds fewer than capacity / C frames and the bank
has room. When the bank is full, a frame of a class below its quota takes the place of the
worst frame of the classes holding the most; a frame of a class at its quota takes the place
of the worst of its own class. "Worst" is the highest heuristic score λ_t·σ(age / capacity)
+ λ_u·entropy / ln C (old and uncertain), and the swap happens only if that score exceeds the
new frame's own (age 0). Every frame ages by one per frame offered, kept or not.

State is five tensors (buffers), so `state_dict`, `reset()` and resume files carry it as is:
data (capacity, C, H, W), labels, uncertainty, age and an occupied mask. The frames cost
capacity·C·H·W floats (64 CIFAR frames: 0.75 MiB).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MemoryBank"]


class MemoryBank(nn.Module):
    """A category-balanced bank of `capacity` frames shaped `frame_shape` (see the module
    docstring). The frame shape follows the stream: an empty bank takes the shape of the first
    frame offered (`fit_frames`)."""

    def __init__(
        self,
        capacity: int,
        num_classes: int,
        frame_shape: tuple[int, ...],
        *,
        lambda_t: float = 1.0,
        lambda_u: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.capacity = capacity
        self.num_classes = num_classes
        self.lambda_t = lambda_t
        self.lambda_u = lambda_u
        # A one-class model has no uncertainty to weigh (its entropy is always 0).
        self._log_classes = math.log(num_classes) if num_classes > 1 else 1.0
        self.register_buffer("data", torch.zeros(capacity, *frame_shape, dtype=dtype))
        self.register_buffer("labels", torch.zeros(capacity, dtype=torch.long))
        self.register_buffer("uncertainty", torch.zeros(capacity))
        self.register_buffer("age", torch.zeros(capacity, dtype=torch.long))
        self.register_buffer("occupied", torch.zeros(capacity, dtype=torch.bool))

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return int(self.occupied.sum())

    def class_counts(self) -> Tensor:
        """Frames held per class, (num_classes,)."""
        return torch.bincount(self.labels[self.occupied], minlength=self.num_classes)

    def score(self, age: Tensor | float, uncertainty: Tensor | float) -> Tensor:
        """The eviction score: higher is evicted first."""
        age = torch.as_tensor(age, dtype=torch.float32, device=self.age.device)
        uncertainty = torch.as_tensor(uncertainty, dtype=torch.float32, device=self.age.device)
        return (
            self.lambda_t * torch.sigmoid(age / self.capacity)
            + self.lambda_u * uncertainty / self._log_classes
        )

    @torch.no_grad()
    def add(self, frame: Tensor, label: int, uncertainty: float) -> bool:
        """Offer one frame (C, H, W) with its pseudo-label and entropy; True if it was kept."""
        counts = self.class_counts()
        slot = None
        if counts[label] < self.capacity / self.num_classes:
            free = torch.nonzero(~self.occupied)
            if len(free):
                slot = int(free[0])
            else:  # make room in the classes holding the most
                candidates = self.occupied & (counts[self.labels] == counts.max())
                slot = self._worse_than_new(candidates, uncertainty)
        else:  # the class is at its quota: a frame of its own has to go
            slot = self._worse_than_new(self.occupied & (self.labels == label), uncertainty)
        if slot is not None:
            self.data[slot] = frame.to(self.data.dtype)
            self.labels[slot] = label
            self.uncertainty[slot] = uncertainty
            self.age[slot] = 0
            self.occupied[slot] = True
        self.age[self.occupied] += 1
        return slot is not None

    def _worse_than_new(self, candidates: Tensor, uncertainty: float) -> int | None:
        """The candidate slot with the highest score if it beats a new frame's, else None."""
        scores = self.score(self.age, self.uncertainty).masked_fill(~candidates, -math.inf)
        worst = int(scores.argmax())
        if not bool(candidates[worst]):  # no candidates at all: nothing to evict
            return None
        return worst if bool(scores[worst] > self.score(0.0, uncertainty)) else None

    def frames(self) -> Tensor:
        """The frames held, (n, C, H, W), in slot order."""
        return self.data[self.occupied]

    def ages(self) -> Tensor:
        """Their ages as fractions of the capacity, (n,), RoTTA's normalisation."""
        return self.age[self.occupied].to(self.data.dtype) / self.capacity

    def fit_frames(self, frame_shape: tuple[int, ...]) -> None:
        """Hold frames shaped `frame_shape` from now on; only an empty bank changes shape (the
        caller raises otherwise), and its data becomes zeros."""
        if tuple(frame_shape) != self.frame_shape:
            self.data = torch.zeros(
                self.capacity, *frame_shape, dtype=self.data.dtype, device=self.data.device
            )

    @torch.no_grad()
    def fill(self, frames: Tensor) -> None:
        """Fill every slot: frames (capacity, C, H, W), labels in turn so each class holds its
        quota, ages 1..capacity. For memory probes, which need a full bank."""
        self.fit_frames(tuple(frames.shape[1:]))
        self.data.copy_(frames)
        self.labels.copy_(torch.arange(self.capacity) % self.num_classes)
        self.uncertainty.fill_(0.5 * self._log_classes)
        self.age.copy_(torch.arange(1, self.capacity + 1))
        self.occupied.fill_(True)
