"""Multi-process training of the PyTorch replica with DistributedDataParallel.

Launch with torchrun; ``lenet5 train --engine torch`` notices it runs under torchrun::

    torchrun --nproc_per_node 2 -m lenet5.cli train --engine torch            # CPU: gloo
    torchrun --nproc_per_node 4 -m lenet5.cli train --engine torch --device cuda   # GPUs: NCCL

``--batch-size`` stays the *global* batch: each of the W processes takes batch/W images of it.
A DistributedSampler (reshuffled each epoch with ``set_epoch``) gives rank r the positions
r, r+W, r+2W, ... of one seeded permutation, so at every step the W local batches together are
one contiguous block of that permutation; DDP averages the W gradients, which equals the
gradient of the mean loss over that global batch. Training is therefore the same as one
process stepping through the same permutation with the global batch size. Only rank 0 prints,
evaluates and saves.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np

from .torch import TorchModel, criterion  # first: a clear error when PyTorch is not installed
import torch  # noqa: E402
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .data import Dataset
from .errors import Lenet5Error
from .schedules import make_schedule
from .train import Progress, evaluate


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


def fit_ddp(model: TorchModel, optimizer, data: Dataset, epochs: int, batch_size: int, schedule: str, seed: int,
            progress: bool, on_epoch: Callable[[dict], None] | None, rank: int, world: int,
            augment: Callable | None = None, warmup_steps: int = 0) -> list[dict]:
    """The DDP training loop; returns the per-epoch records (on every rank; rank 0 evaluates).

    ``optimizer`` is a ``lenet5.torch.TorchOptimizer`` over ``model.net``'s parameters (DDP
    wraps the same parameter tensors). Augmentation draws from (seed, epoch, step, rank).
    """
    if batch_size % world:
        raise Lenet5Error(f"--batch-size {batch_size}: must be a multiple of the number of processes ({world})")
    local = batch_size // world
    dev = model.device
    net = DistributedDataParallel(model.net, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = optimizer.opt
    n = len(data.train)
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    steps = math.ceil(len(sampler) / local)
    lr_at = make_schedule(schedule, optimizer.lr, epochs * steps, warmup_steps)
    labels_all = torch.from_numpy(data.train.labels)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        bar = Progress(steps, f"epoch {epoch}/{epochs}", enabled=progress and rank == 0)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
        net.train()
        for step in range(steps):
            idx = order[step * local:(step + 1) * local]
            for group in opt.param_groups:
                group["lr"] = lr_at((epoch - 1) * steps + step)
            images = data.train.images[idx]
            if augment is not None:
                images = augment(images, np.random.default_rng([seed, epoch, step, rank]))
            x = torch.from_numpy(model.prepare(images)).to(dev)
            y = labels_all[idx].to(dev)
            logits = net(x)
            loss = criterion(model.preset.name, logits, y, model.criterion_name, model.map_j)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            totals += torch.tensor([loss.item() * len(idx), (logits.argmax(1) == y).sum().item(), len(idx)],
                                   dtype=torch.float64)
            bar.update()
        bar.close()
        dist.all_reduce(totals)  # gloo and NCCL both reduce float64 CPU/GPU tensors
        record = {"epoch": epoch, "train_loss": totals[0].item() / totals[2].item(),
                  "train_acc": totals[1].item() / totals[2].item(), "world_size": world,
                  "train_seconds": time.perf_counter() - start}
        if rank == 0:
            test = evaluate(model, data.test)
            record.update(test_loss=test["loss"], test_acc=test["accuracy"], seconds=time.perf_counter() - start)
            if on_epoch is not None:
                on_epoch(record)
        history.append(record)
        dist.barrier()
    return history


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

