"""The PyTorch replica: the networks of ``lenet5.presets``, assembled from the same layer lists.

``replica(spec)`` walks ``spec.layers()`` (the very list the NumPy engine runs) and maps each
layer kind, once, to torch's own module for it (``MODULES``): ``Conv2d`` -> ``nn.Conv2d``,
``BatchNorm2d`` -> ``nn.BatchNorm2d``, LeNet-5's squashing, trainable subsampling and RBF output
-> the small modules below, written with torch ops. The computation is torch's, not a copy of
the NumPy engine's, so the parity tests (``tests/test_torch_parity.py``) compare two independent
implementations of one description. The modules keep the layers' names, so ``state_dict()`` keys
are the NumPy engine's parameter names and weights move both ways unchanged::

    from safetensors.torch import load_file
    net = lenet5.torch_replica.build("seed-tanh")
    net.load_state_dict(load_file("runs/.../model.safetensors"))

PyTorch is optional: importing this module without it raises a clear error.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np

from .errors import Lenet5Error

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise Lenet5Error("PyTorch is not installed; install it with: pip install 'lenet5[torch]' "
                      "(CPU-only: pip install torch==2.13.0)") from e

from . import lecun1998
from .engine import Optimizer, SingleProcess
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .model import LeNet5
from .optim import check_state
from .presets import DEFAULT_PRESET, ModelSpec, TrainConfig


# --------------------------------------------------------------------------- LeNet-5's own pieces
class Squash(nn.Module):
    """LeNet-5's f(a) = A·tanh(S·a), A = 1.7159, S = 2/3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lecun1998.A * torch.tanh(x * lecun1998.S)


class Subsample(nn.Module):
    """Trainable subsampling: coefficient × (sum of each 2×2 block) + bias, per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * F.avg_pool2d(x, 2) * self.weight[:, None, None] + self.bias[:, None, None]


class MaskedConv2d(nn.Conv2d):
    """A convolution whose unconnected kernels (mask 0) are left out: LeNet-5's partial C3."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 connections: np.ndarray) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.register_buffer("mask", torch.from_numpy(np.asarray(connections, np.float32))[:, :, None, None],
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask.to(x.dtype), self.bias)


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed centres; returns −distance (the largest wins)."""

    def __init__(self, centres: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("centres", torch.from_numpy(np.array(centres)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None, :] - self.centres[None]) ** 2).sum(-1)


# --------------------------------------------------------------------------- layer kind -> module
def _conv(layer: Conv2d) -> nn.Module:
    out_c, in_c, k, _ = layer.params["weight"].shape
    if layer.mask is None:
        return nn.Conv2d(in_c, out_c, k, padding=layer.pad)
    return MaskedConv2d(in_c, out_c, k, layer.pad, layer.mask[:, :, 0, 0])


#: every layer kind of ``lenet5.layers`` and ``lenet5.lecun1998``, and torch's module for it
MODULES: dict[type, Callable[[Layer], nn.Module]] = {
    Conv2d: _conv,
    Linear: lambda layer: nn.Linear(layer.params["weight"].shape[1], layer.params["weight"].shape[0]),
    BatchNorm2d: lambda layer: nn.BatchNorm2d(len(layer.params["weight"]), eps=layer.eps, momentum=layer.momentum),
    Dropout: lambda layer: nn.Dropout(layer.p),
    Tanh: lambda layer: nn.Tanh(),
    Sigmoid: lambda layer: nn.Sigmoid(),
    ReLU: lambda layer: nn.ReLU(),
    AvgPool2d: lambda layer: nn.AvgPool2d(2),
    MaxPool2d: lambda layer: nn.MaxPool2d(2),
    Flatten: lambda layer: nn.Flatten(),
    lecun1998.Squash: lambda layer: Squash(),
    lecun1998.Subsample2d: lambda layer: Subsample(len(layer.params["weight"])),
    lecun1998.RBF: lambda layer: RBFOutput(layer.buffers["centres"]),
}


def replica(spec: ModelSpec) -> nn.Sequential:
    """The network ``spec`` describes, as an ``nn.Sequential`` of torch modules named like its
    layers (untrained: load weights, or use ``build``)."""
    modules = []
    for name, layer in spec.layers():
        if type(layer) not in MODULES:
            raise Lenet5Error(f"the PyTorch replica has no module for layer {name} ({layer!r})")
        modules.append((name, MODULES[type(layer)](layer)))
    return nn.Sequential(OrderedDict(modules))


def build(preset: str | ModelSpec = DEFAULT_PRESET, seed: int | None = 0, dtype: torch.dtype = torch.float32,
          widths: tuple[int, int, int] | None = None, dropout: float | None = None) -> nn.Sequential:
    """The replica of ``preset`` (a name or a ModelSpec), initialised exactly like
    ``LeNet5(preset, seed, widths=widths)``: the NumPy engine's initialiser draws the weights
    (same RNG stream), so both engines start from identical weights for the same seed."""
    spec = preset if isinstance(preset, ModelSpec) else ModelSpec(preset, widths, dropout)
    reference = LeNet5.from_spec(ModelSpec(spec.preset, spec.widths, spec.dropout, "float64"), seed=seed)
    net = replica(spec).to(dtype)
    net.load_state_dict(to_torch_state(reference.state_dict(), dtype))
    return net


def to_torch_state(state: dict[str, np.ndarray], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """NumPy arrays -> tensors; floating ones in ``dtype``, integer ones (batch counters) as they are."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype if np.asarray(v).dtype.kind == "f" else None)
            for k, v in state.items()}


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda' (error if unavailable) or 'auto' (cuda when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Lenet5Error(f"--device {device}: CUDA is not available in this PyTorch build or on this machine")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise Lenet5Error(f"--device {device}: {e}") from None


# --------------------------------------------------------------------------- the engine
class TorchModel(SingleProcess):
    """The replica as an ``lenet5.engine.Engine``, so ``lenet5.train.fit`` drives it like LeNet5.

    ``forward`` takes the prepared NumPy batch, moves it to the device and returns the outputs
    as a tensor there; the training step evaluates the criterion on it with torch and hands the
    gradient back to ``backward``, so nothing returns to the host during a step.
    """

    def __init__(self, preset: str = DEFAULT_PRESET, seed: int | None = 0, dtype: np.dtype | type | str = np.float32,
                 device: str = "cpu", widths: tuple[int, int, int] | None = None, dropout: float | None = None,
                 net: nn.Module | None = None) -> None:
        self.spec = ModelSpec(preset, None if widths is None else tuple(widths), dropout, np.dtype(dtype).name)
        self.preset = self.spec.definition
        self.dtype = np.dtype(dtype)
        self.torch_dtype = torch.float64 if self.dtype == np.float64 else torch.float32
        self.device = resolve_device(device)
        self.net = (net if net is not None else build(self.spec, seed, self.torch_dtype)).to(self.device)
        self._dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.net.modules())
        self._outputs: torch.Tensor | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, seed: int | None = 0, device: str = "cpu") -> "TorchModel":
        return cls(spec.preset, seed=seed, dtype=spec.dtype, device=device, widths=spec.widths, dropout=spec.dropout)

    @classmethod
    def from_config(cls, config: TrainConfig) -> "TorchModel":
        return cls.from_spec(config.spec, seed=config.seed, device=config.device)

    def make_optimizer(self, config: TrainConfig) -> Optimizer:
        return TorchOptimizer(self, config.optimizer, lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, nesterov=config.nesterov)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return self.preset.prepare(images, self.dtype)

    def seed_step(self, seed: list[int]) -> None:
        """torch's dropout draws from the global generator: seed it for this step."""
        if self._dropout:
            torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))

    def train(self, mode: bool = True) -> "TorchModel":
        self.net.train(mode)
        return self

    def eval(self) -> "TorchModel":
        return self.train(False)

    def _run(self, x_device: torch.Tensor) -> torch.Tensor:
        return self.net(x_device)

    def forward(self, x: np.ndarray) -> torch.Tensor:
        """x (N, 1, S, S) NumPy -> outputs (N, 10), a tensor on the device (kept for backward)."""
        self._outputs = self._run(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.torch_dtype))
        return self._outputs.detach()

    def backward(self, doutputs: torch.Tensor) -> None:
        for p in self.net.parameters():
            p.grad = None
        self._outputs.backward(doutputs)
        self._outputs = None

    def infer(self, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
        """Outputs (N, 10) as NumPy for uint8 images (N, 28, 28), in inference mode."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.inference_mode():
                out = [self.net(torch.from_numpy(self.prepare(images[i:i + chunk])).to(self.device)).cpu().numpy()
                       for i in range(0, len(images), chunk)]
        finally:
            self.net.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, 10), self.dtype)

    def params(self) -> dict[str, np.ndarray]:
        """Trainable parameters by name, as LeNet5.params(): on the CPU the arrays share the
        tensors' memory (live); on a GPU they are copies."""
        return {k: v.detach().cpu().numpy() for k, v in self.net.named_parameters()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer, keyed like LeNet5.state_dict()."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.net.load_state_dict(to_torch_state(state, self.torch_dtype))

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.net.parameters())
        widths = f", widths={self.spec.widths}" if self.spec.widths else ""
        return (f"TorchModel(preset={self.preset.name!r}{widths}, dtype={self.dtype}, device={self.device}, "
                f"params={n})")


class TorchOptimizer:
    """torch.optim.SGD / Adam / AdamW as an ``lenet5.engine.Optimizer``: an ``lr`` attribute
    the schedule sets, and state dicts of NumPy arrays with the same names as
    ``lenet5.optim``'s ('velocity.<param>', 'm.<param>', 'v.<param>', 'steps')."""

    _SLOTS = {"momentum_buffer": "velocity", "exp_avg": "m", "exp_avg_sq": "v"}

    def __init__(self, model: TorchModel, name: str = "sgd", lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        params = model.net.parameters()
        if name == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        elif name == "adam":
            self.opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif name == "adamw":
            self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        else:
            raise Lenet5Error(f"unknown optimizer {name!r}")
        self._named = dict(model.net.named_parameters())
        self._slots = ("velocity",) if name == "sgd" else ("m", "v")  # the names lenet5.optim saves
        self.steps = 0

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = value

    def step(self) -> None:
        self.steps += 1
        self.opt.step()

    def prepare_epoch(self, model, split, rng: np.random.Generator) -> None:
        """First-order methods need nothing before a pass."""

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"steps": np.array(self.steps, dtype=np.int64)}
        for name, p in self._named.items():
            for key, value in self.opt.state.get(p, {}).items():
                if key in self._SLOTS:
                    out[f"{self._SLOTS[key]}.{name}"] = value.detach().cpu().numpy().copy()
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        torch_key = {v: k for k, v in self._SLOTS.items()}
        check_state(state, {name: tuple(p.shape) for name, p in self._named.items()}, self._slots)
        self.steps = int(np.asarray(state.get("steps", 0)).reshape(-1)[0])
        for key, value in state.items():
            slot, _, name = key.partition(".")
            if slot in torch_key:
                p = self._named[name]
                st = self.opt.state[p]
                st[torch_key[slot]] = torch.from_numpy(np.array(value)).to(p.device, p.dtype)
                if slot != "velocity":
                    st["step"] = torch.tensor(float(self.steps))
