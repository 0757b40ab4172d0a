"""The PyTorch replica: the same networks as ``lenet5.model``, as ``torch.nn.Module`` s.

Attribute names (c1, c3, c5, f6, output) make ``state_dict()`` keys identical to the NumPy
engine's parameter names, so weights move both ways::

    from safetensors.torch import load_file
    net = lenet5.torch_replica.build("seed-tanh")
    net.load_state_dict(load_file("runs/.../model.safetensors"))

PyTorch is optional: importing this module without it raises a clear error.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .errors import Lenet5Error

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise Lenet5Error("PyTorch is not installed; install it with: pip install 'lenet5[torch]' "
                      "(CPU-only: pip install torch==2.13.0)") from e

from .averaging import with_average
from .engine import Optimizer, SingleProcess
from .lecun1998 import A, S, C3_TABLE, rbf_centres
from .model import LeNet5
from .optim import check_state
from .presets import TrainConfig, criterion_for, get_preset


class SeedLeNet5(nn.Module):
    """seed-tanh / seed-sigmoid: C1(pad 2)-act-S2-C3-act-S4-C5-act-F6-sigmoid-OUTPUT (logits)."""

    def __init__(self, activation: str = "tanh") -> None:
        super().__init__()
        self.act = torch.tanh if activation == "tanh" else torch.sigmoid
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.act(self.c1(x)), 2)  # S2
        x = F.avg_pool2d(self.act(self.c3(x)), 2)  # S4
        x = self.act(self.c5(x)).flatten(1)
        x = torch.sigmoid(self.f6(x))
        return self.output(x)


class ModernLeNet5(nn.Module):
    """modern: C1-BN-ReLU-maxpool, C3-BN-ReLU-maxpool, C5-ReLU-dropout, F6-ReLU-dropout, OUTPUT."""

    def __init__(self, p_drop: float = 0.1, widths: tuple[int, int, int] = (6, 16, 120)) -> None:
        super().__init__()
        self.p_drop = p_drop
        c1, c3, c5 = widths
        self.c1 = nn.Conv2d(1, c1, 5, padding=2)
        self.c1_bn = nn.BatchNorm2d(c1)
        self.c3 = nn.Conv2d(c1, c3, 5)
        self.c3_bn = nn.BatchNorm2d(c3)
        self.c5 = nn.Conv2d(c3, c5, 5)
        self.f6 = nn.Linear(c5, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1_bn(self.c1(x))), 2)  # S2
        x = F.max_pool2d(F.relu(self.c3_bn(self.c3(x))), 2)  # S4
        x = F.dropout(F.relu(self.c5(x)).flatten(1), self.p_drop, self.training)
        x = F.dropout(F.relu(self.f6(x)), self.p_drop, self.training)
        return self.output(x)


def squash(x: torch.Tensor) -> torch.Tensor:
    """LeNet-5's f(a) = A·tanh(S·a), A = 1.7159, S = 2/3."""
    return A * torch.tanh(x * S)


class Subsample(nn.Module):
    """Trainable subsampling: coefficient × (sum of each 2×2 block) + bias, per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * F.avg_pool2d(x, 2) * self.weight[:, None, None] + self.bias[:, None, None]


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed centres; returns −distance (the largest wins)."""

    def __init__(self, centres: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("centres", torch.from_numpy(np.array(centres)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None, :] - self.centres[None]) ** 2).sum(-1)


class LeCun1998(nn.Module):
    """lecun1998: 32×32 input, C1, S2 (trainable), C3 (partial table), S4, C5, F6, RBF OUTPUT."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2 = Subsample(6)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.register_buffer("c3_mask", torch.from_numpy(C3_TABLE.T.astype(np.float32))[:, :, None, None],
                             persistent=False)
        self.s4 = Subsample(16)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = RBFOutput(rbf_centres())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = squash(self.s2(squash(self.c1(x))))
        x = F.conv2d(x, self.c3.weight * self.c3_mask.to(x.dtype), self.c3.bias)
        x = squash(self.s4(squash(x)))
        x = squash(self.c5(x)).flatten(1)
        return self.output(squash(self.f6(x)))


def criterion(preset: str, logits: torch.Tensor, labels: torch.Tensor, name: str | None = None,
              map_j: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """The preset's training criterion in torch (for autograd parity checks): cross-entropy
    (with torch's own label smoothing), or for lecun1998 the MAP criterion (a cross-entropy
    over the K outputs plus a constant −j entry) or MSE."""
    name = name or get_preset(preset).criteria[0]
    rows = torch.arange(len(labels))
    if name == "cross-entropy":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if name == "mse":
        return -logits[rows, labels].mean()
    extra = torch.full((len(labels), 1), -map_j, dtype=logits.dtype, device=logits.device)
    return (torch.logsumexp(torch.cat([logits, extra], 1), 1) - logits[rows, labels]).mean()


def build(preset: str, seed: int | None = 0, dtype: torch.dtype = torch.float32,
          widths: tuple[int, int, int] | None = None) -> nn.Module:
    """The replica of ``preset``, initialised exactly like ``LeNet5(preset, seed, widths=widths)``.

    Initialisation reuses the NumPy engine's initialiser (same RNG stream), so both engines
    start from identical weights for the same seed.
    """
    reference = LeNet5(preset, seed=seed, dtype=np.float64, widths=widths)  # refuses widths it cannot take
    cls_name, kwargs = get_preset(preset).replica
    net = globals()[cls_name](**kwargs, **({"widths": reference.widths} if widths else {})).to(dtype)
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


class TorchModel(SingleProcess):
    """The replica as an ``lenet5.engine.Engine``, so ``lenet5.train.fit`` drives it like LeNet5.

    prepare / forward / loss / backward / infer / params / state_dict behave like
    ``LeNet5``'s: inputs are prepared by the same preset code, the loss and its gradient are
    the same NumPy function, and backward feeds that gradient to autograd.
    """

    def __init__(self, preset: str, seed: int | None = 0, dtype: np.dtype | type = np.float32,
                 device: str = "cpu", net: nn.Module | None = None, criterion: str | None = None,
                 map_j: float = 0.1, label_smoothing: float = 0.0, widths: tuple[int, int, int] | None = None) -> None:
        self.preset = get_preset(preset)
        self.widths = None if widths is None else tuple(widths)
        self.criterion = criterion_for(self.preset, criterion, map_j, label_smoothing)
        self.map_j, self.label_smoothing = map_j, label_smoothing
        self.dtype = np.dtype(dtype)
        self.torch_dtype = torch.float64 if self.dtype == np.float64 else torch.float32
        self.device = resolve_device(device)
        self.net = (net if net is not None else build(preset, seed, self.torch_dtype, self.widths)).to(self.device)
        self._logits: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> "TorchModel":
        model = cls(config.preset, seed=config.seed, dtype=config.dtype, device=config.device,
                    criterion=config.criterion, map_j=config.map_j, label_smoothing=config.label_smoothing,
                    widths=config.widths)
        if config.dropout is not None:
            model.net.p_drop = config.dropout
        return model

    def make_optimizer(self, config: TrainConfig) -> Optimizer:
        return with_average(TorchOptimizer(self, config.optimizer, lr=config.lr, momentum=config.momentum,
                                           weight_decay=config.weight_decay, nesterov=config.nesterov),
                            self, config.ema)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return self.preset.prepare(images, self.dtype)

    @property
    def stochastic(self) -> bool:
        return any(isinstance(m, nn.BatchNorm2d) for m in self.net.modules()) or getattr(self.net, "p_drop", 0) > 0

    def seed_step(self, seed: list[int]) -> None:
        """torch's dropout draws from the global generator: seed it for this step."""
        torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))

    def train(self, mode: bool = True) -> "TorchModel":
        self.net.train(mode)
        return self

    def eval(self) -> "TorchModel":
        return self.train(False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._logits = self.net(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return self._logits.detach().cpu().numpy()

    def loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """The preset's criterion, the same NumPy function the NumPy engine uses."""
        return self.criterion.loss(logits, labels)

    def backward(self, dlogits: np.ndarray) -> None:
        for p in self.net.parameters():
            p.grad = None
        self._logits.backward(torch.from_numpy(dlogits).to(self.device))
        self._logits = None

    def infer(self, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
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
        return f"TorchModel(preset={self.preset.name!r}, dtype={self.dtype}, device={self.device}, params={n})"


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

    def evaluating(self, model) -> contextlib.AbstractContextManager:
        """The weights to evaluate and save are the model's own."""
        return contextlib.nullcontext()

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
