"""Multi-process training of the PyTorch replica with DistributedDataParallel, as an engine.

Launch with torchrun; ``lenet5 train --engine torch`` notices it runs under torchrun::

    torchrun --nproc_per_node 2 -m lenet5.cli train --engine torch            # CPU: gloo
    torchrun --nproc_per_node 4 -m lenet5.cli train --engine torch --device cuda   # GPUs: NCCL

``DDPModel`` is a ``TorchModel`` whose forward runs through DistributedDataParallel, so the one
training loop (``lenet5.train.fit``) drives it with all its features: resume, validation
split, divergence guard, Ctrl-C. Every process walks the same seeded permutation of the
training set; ``--batch-size`` stays the *global* batch and process r computes its share
``shard(batch) = batch[r::W]``. ``train_step`` rescales each share's gradient by
W·n_r/n, and DDP averages the W gradients, so the update is the gradient of the mean loss over
the whole global batch: the same training as one process with that batch. Only rank 0 prints
and writes the run directory; every rank evaluates (the weights are identical).
"""

from __future__ import annotations

import os

import numpy as np

from .torch_replica import TorchModel  # first: a clear error when PyTorch is not installed
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from .errors import Lenet5Error  # noqa: E402
from .presets import TrainConfig  # noqa: E402


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> tuple[int, int, torch.device]:
    """Join the process group: NCCL on CUDA (one GPU per local rank), gloo on CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise Lenet5Error(f"--device {device}: CUDA is not available")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, dev


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DDPModel(TorchModel):
    """The replica trained by W processes at once (see the module docstring)."""

    def __init__(self, config: TrainConfig, rank: int, world: int) -> None:
        spec = config.spec
        super().__init__(spec.preset, seed=config.seed, dtype=spec.dtype, device=config.device, widths=spec.widths,
                         dropout=spec.dropout)
        self.rank, self.world = rank, world
        self.ddp = DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                           else None)

    def _run(self, x_device: torch.Tensor) -> torch.Tensor:
        return self.ddp(x_device)

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch[self.rank::self.world]

    def all_sum(self, values: list) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)  # gloo and NCCL both reduce float64 tensors
        return t.tolist()
