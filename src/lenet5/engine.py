"""The contract between the training loop and the networks it drives, written down.

``lenet5.train.fit`` uses exactly these and nothing else, so any engine that has them trains
with every feature of the loop (resume, validation, divergence guard, Ctrl-C, progress): the
NumPy ``LeNet5``, the PyTorch replica (``lenet5.torch_replica.TorchModel``) and its
multi-process form (``lenet5.ddp.DDPModel``).

An engine computes; it knows no loss. The training step (``lenet5.train.train_step``) owns the
criterion (``lenet5.losses.Criterion``): forward -> criterion -> backward -> optimizer step. The
outputs an engine returns from ``forward`` are its own arrays (NumPy arrays, or torch tensors on
the engine's device) and the criterion evaluates them where they are.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .presets import ModelSpec, TrainConfig


@runtime_checkable
class Optimizer(Protocol):
    """Updates an engine's parameters from its gradients; ``lr`` is set by the schedule."""

    lr: float

    def step(self) -> None: ...
    def prepare_epoch(self, model: "Engine", split, rng: np.random.Generator) -> None: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """A network the loop can train, built from ``spec`` (``spec.layers()``).

    forward:   x (N, 1, S, S) prepared inputs (NumPy) -> outputs (N, 10), the engine's arrays,
               kept for backward while training
    backward:  d loss / d outputs (N, 10), the engine's arrays -> fills the parameters' gradients
    parameters: ``make_optimizer(config)``, the optimizer ``config`` names over them
    state dict: ``state_dict()`` / ``load_state_dict()``, NumPy arrays keyed 'c1.weight', ...
    and the mode (``train(bool)``), a seed for each step's randomness (dropout), and inference
    on uint8 images (``infer``: NumPy outputs, nothing kept).

    Data parallel (what DDP needs): each of ``world`` processes computes ``shard(batch)`` of every
    global batch, and ``all_sum`` adds numbers over processes. One process: rank 0, world 1,
    ``shard`` = identity, ``all_sum`` = identity (``SingleProcess``).
    """

    spec: ModelSpec
    rank: int
    world: int

    def forward(self, x: np.ndarray) -> Any: ...
    def backward(self, doutputs: Any) -> None: ...
    def make_optimizer(self, config: TrainConfig) -> Optimizer: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...
    def train(self, mode: bool = True) -> object: ...
    def seed_step(self, seed: list[int]) -> None: ...
    def infer(self, images: np.ndarray) -> np.ndarray: ...
    def shard(self, batch: np.ndarray) -> np.ndarray: ...
    def all_sum(self, values: list) -> list[float]: ...


class SingleProcess:
    """The data-parallel part of ``Engine`` for an engine that runs in one process."""

    rank = 0
    world = 1

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def all_sum(self, values: list) -> list[float]:
        return [float(v) for v in values]
