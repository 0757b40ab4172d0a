"""Optimizers: they own the update rule and read parameters and gradients by name.

Layers never update themselves; an optimizer is handed the model's ``params()`` and
``grads()`` dictionaries (the live arrays) and updates every parameter the same way. The
rules follow torch.optim exactly (the parity tests check it), so both engines train alike.
"""

from __future__ import annotations

import math

import numpy as np

from .presets import TrainConfig


def as_one_vector(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The vector that ``arrays`` are consecutive views of, in order (as ``LeNet5`` stores its
    parameters and gradients), or None when they are not laid out that way."""
    if not arrays or arrays[0].base is None:
        return None
    base = arrays[0].base
    while base.base is not None:
        base = base.base
    if base.ndim != 1 or sum(a.size for a in arrays) != base.size:
        return None
    at = base.__array_interface__["data"][0]
    for a in arrays:
        if a.__array_interface__["data"][0] != at or not a.flags.c_contiguous or a.dtype != base.dtype:
            return None
        at += a.nbytes
    return base


class Optimizer:
    """Common checks and state handling. ``lr`` may be changed between steps (schedules)."""

    #: per-parameter state arrays, saved as "<slot>.<param name>"
    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float,
                 weight_decay: float = 0.0) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
        if set(params) != set(grads):
            raise ValueError("params and grads must have the same names")
        self.params, self.grads = params, grads
        self.lr, self.weight_decay = lr, weight_decay
        self.state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        for name, p in self.params.items():
            self.update(name, p, self.grads[name])

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def prepare_epoch(self, model, split, rng: np.random.Generator) -> None:
        """Called by the training loop before each pass (not on a mid-pass resume). Nothing
        to do for first-order methods; SDLM estimates its curvature here."""

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"{slot}.{name}": v.copy() for slot, arrays in self.state.items() for name, v in arrays.items()}
        out["steps"] = np.array(self.steps, dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(np.asarray(state.get("steps", 0)).reshape(-1)[0])
        for key, value in state.items():
            slot, _, name = key.partition(".")
            if slot in self.state:
                self.state[slot][name] = np.array(value, dtype=self.params[name].dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    Same rule as torch.optim.SGD (dampening 0):
        g ← ∇θ + λ·θ                 (weight decay λ)
        v ← μ·v + g                  (momentum μ; v starts as g on the first step)
        θ ← θ − η·v                  (or θ − η·(g + μ·v) with nesterov=True)
    """

    slots = ("velocity",)

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, grads, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = self.state["velocity"].get(name)
            if v is None:
                v = self.state["velocity"][name] = g.copy()
            else:
                v *= self.momentum
                v += g
            g = g + self.momentum * v if self.nesterov else v
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba), with bias correction, as torch.optim.Adam:

        g ← ∇θ + λ·θ;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
        θ ← θ − η/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
    """

    slots = ("m", "v")
    decoupled = False

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, grads, lr, weight_decay)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas, self.eps = betas, eps

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m = self.state["m"].setdefault(name, np.zeros_like(p))
        v = self.state["v"].setdefault(name, np.zeros_like(p))
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        t = self.steps
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + self.eps
        p -= (self.lr / (1 - b1 ** t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
    θ ← θ·(1 − η·λ) before the Adam step, instead of adding λ·θ to the gradient."""

    decoupled = True

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, grads, lr, betas, eps, weight_decay)


class SDLM(Optimizer):
    """Stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998, Appendix C).

    Each parameter θ_k gets its own step η/(μ + h_kk), where h_kk is a Gauss-Newton estimate
    of ∂²E/∂θ_k², averaged over ``samples`` random training images and re-estimated before
    every pass (``prepare_epoch``, called by the training loop). Large curvature: small steps.

        θ_k ← θ_k − η/(μ + h_kk) · ∂E/∂θ_k
    """

    slots = ("hessian",)

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float = 0.0005,
                 mu: float = 0.02, samples: int = 500) -> None:
        super().__init__(params, grads, lr)
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.mu, self.samples = mu, samples
        self._scale: np.ndarray | None = None  # 1/(μ + h_kk) for every value, derived from the state
        # per-pattern updates are many and small: do them on the whole parameter vector at once
        # when the model stores its parameters as one (LeNet5 does), else parameter by parameter
        self._flat = (as_one_vector(list(params.values())), as_one_vector([grads[k] for k in params]))
        self._buf = np.empty(sum(p.size for p in params.values()), next(iter(params.values())).dtype)

    def prepare_epoch(self, model, split, rng: np.random.Generator) -> None:
        """h_kk for this pass, from ``samples`` training images drawn with ``rng``."""
        idx = rng.choice(len(split), size=min(self.samples, len(split)), replace=False)
        self.state["hessian"] = model.diag_hessian(model.prepare(split.images[idx]), split.labels[idx])
        self._scale = None

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self._scale = None

    def _scales(self) -> np.ndarray:
        """1/(μ + h_kk) for every parameter value, in params() order, as one vector."""
        if self._scale is None:
            hessian = self.state["hessian"]
            if set(hessian) != set(self.params):
                raise RuntimeError("SDLM needs a curvature estimate first: call prepare_epoch(model, split, rng)")
            h = np.concatenate([hessian[name].reshape(-1) for name in self.params])
            self._scale = (1 / (self.mu + h)).astype(self._buf.dtype)
        return self._scale

    def step(self) -> None:
        self.steps += 1
        scale = self._scales()
        flat_p, flat_g = self._flat
        if flat_p is not None and flat_g is not None:  # θ ← θ − η·g/(μ + h), three vector operations
            step = np.multiply(flat_g, scale, out=self._buf)
            step *= self.lr
            flat_p -= step
            return
        at = 0
        for name, p in self.params.items():
            self.update(name, p, self.grads[name], scale[at:at + p.size].reshape(p.shape))
            at += p.size

    def update(self, name: str, p: np.ndarray, g: np.ndarray, scale: np.ndarray | None = None) -> None:
        if scale is None:
            scale = 1 / (self.mu + self.state["hessian"][name])
        p -= self.lr * scale * g


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "sdlm": SDLM}


def make_optimizer(config: TrainConfig, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> Optimizer:
    """The optimizer a (resolved, checked) TrainConfig names, over live params and grads."""
    name, lr = config.optimizer, config.lr
    if name == "sgd":
        return SGD(params, grads, lr, momentum=config.momentum, weight_decay=config.weight_decay,
                   nesterov=config.nesterov)
    if name in ("adam", "adamw"):
        return OPTIMIZERS[name](params, grads, lr, weight_decay=config.weight_decay)
    if name == "sdlm":
        return SDLM(params, grads, lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
