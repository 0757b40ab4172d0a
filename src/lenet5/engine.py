"""The contracts between the training loop and what it drives, written down.

``lenet5.train.fit`` uses exactly these methods and nothing else, so any engine that has them
trains with every feature of the loop (resume, validation, divergence guard, Ctrl-C, progress):
the NumPy ``LeNet5``, the PyTorch replica (``lenet5.torch_replica.TorchModel``) and its
multi-process form (``lenet5.ddp.DDPModel``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import numpy as np

from .losses import Criterion
from .presets import Preset, TrainConfig


@runtime_checkable
class Optimizer(Protocol):
    """Updates an engine's parameters from its gradients; ``lr`` is set by the schedule."""

    lr: float

    def step(self) -> None: ...
    def prepare_epoch(self, model: "Engine", split, rng: np.random.Generator) -> None: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...
    #: a context in which the model holds the weights to evaluate and save (its own, or an
    #: average of them: ``lenet5.averaging``)
    def evaluating(self, model: "Engine") -> contextlib.AbstractContextManager: ...


@runtime_checkable
class Engine(Protocol):
    """A network the loop can train: NumPy arrays in and out, whatever computes inside.

    ``rank``/``world`` describe data-parallel training: each of ``world`` processes computes
    ``shard(batch)`` of every global batch, and ``all_sum`` adds numbers over processes.
    A single-process engine has rank 0, world 1, ``shard`` = identity, ``all_sum`` = identity.
    """

    preset: Preset
    dtype: np.dtype
    rank: int
    world: int
    #: the criterion it was built with, and that criterion's settings
    criterion: Criterion
    map_j: float
    label_smoothing: float
    #: C1, C3, C5 channels it was built with (None: its preset's own)
    widths: tuple[int, int, int] | None

    @property
    def stochastic(self) -> bool: ...
    def make_optimizer(self, config: TrainConfig) -> Optimizer: ...
    def prepare(self, images: np.ndarray) -> np.ndarray: ...
    def train(self, mode: bool = True) -> object: ...
    def seed_step(self, seed: list[int]) -> None: ...
    def forward(self, x: np.ndarray) -> np.ndarray: ...
    def loss(self, outputs: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]: ...
    def backward(self, doutputs: np.ndarray) -> None: ...
    def infer(self, images: np.ndarray) -> np.ndarray: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...
    def shard(self, batch: np.ndarray) -> np.ndarray: ...
    def all_sum(self, values: list[float]) -> list[float]: ...
    def running(self) -> contextlib.AbstractContextManager: ...


class SingleProcess:
    """The data-parallel part of ``Engine`` for an engine that runs in one process, and a
    ``running`` context that changes nothing."""

    rank = 0
    world = 1

    def running(self) -> contextlib.AbstractContextManager:
        """The context a training pass runs in (entered once per pass)."""
        return contextlib.nullcontext()

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def all_sum(self, values: list[float]) -> list[float]:
        return values
