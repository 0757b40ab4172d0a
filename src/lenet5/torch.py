"""The PyTorch replica: the same networks as ``lenet5.model``, as ``torch.nn.Module`` s.

Attribute names (c1, c3, c5, f6, output) make ``state_dict()`` keys identical to the NumPy
engine's parameter names, so weights move both ways::

    from safetensors.torch import load_file
    net = lenet5.torch.build("seed-tanh")
    net.load_state_dict(load_file("runs/.../model.safetensors"))

PyTorch is optional: importing this module without it raises a clear error.
"""

from __future__ import annotations

import numpy as np

from .errors import Lenet5Error

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise Lenet5Error("PyTorch is not installed; install it with: pip install 'lenet5[torch]' "
                      "(CPU-only: pip install torch==2.13.0)") from e

from .model import LeNet5, get_preset


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


_ARCH = {"seed-tanh": lambda: SeedLeNet5("tanh"), "seed-sigmoid": lambda: SeedLeNet5("sigmoid")}


def build(preset: str, seed: int | None = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The replica of ``preset``, initialised exactly like ``LeNet5(preset, seed)``.

    Initialisation reuses the NumPy engine's initialiser (same RNG stream), so both engines
    start from identical weights for the same seed.
    """
    get_preset(preset)
    if preset not in _ARCH:
        raise Lenet5Error(f"preset {preset!r} has no PyTorch replica yet")
    net = _ARCH[preset]().to(dtype)
    reference = LeNet5(preset, seed=seed, dtype=np.float64)
    net.load_state_dict(to_torch_state(reference.state_dict(), dtype))
    return net


def to_torch_state(state: dict[str, np.ndarray], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in state.items()}


def to_numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}
