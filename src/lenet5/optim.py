"""Optimizers: they own the update rule and read parameters and gradients by name.

Layers never update themselves; an optimizer is handed the model's ``params()`` and
``grads()`` dictionaries (the live arrays) and updates every parameter the same way. The
rules follow torch.optim exactly (the parity tests check it), so both engines train alike.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import Lenet5Error
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


#: the name ``update`` gets when it updates every parameter at once, as one flat vector
ALL = "*"


def check_state(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], slots: tuple[str, ...]) -> None:
    """Refuse saved optimizer state that does not fit the parameters it is loaded for: keys
    other than "steps" and "<slot>.<parameter>", shapes other than the parameter's, and a slot
    saved for some parameters only (every parameter gets its state on the first step)."""
    saved: dict[str, set[str]] = {}
    for key, value in state.items():
        if key == "steps":
            continue
        slot, _, name = key.partition(".")
        if slot not in slots or name not in shapes:
            raise Lenet5Error(f"optimizer state {key!r} is not '<slot>.<parameter>' of this optimizer "
                              f"(slots: {', '.join(slots) or 'none'})")
        if np.shape(value) != tuple(shapes[name]):
            raise Lenet5Error(f"optimizer state {key!r} has shape {np.shape(value)}, its parameter "
                              f"{tuple(shapes[name])}")
        saved.setdefault(slot, set()).add(name)
    for slot, names in saved.items():
        if names != set(shapes):
            raise Lenet5Error(f"optimizer state {slot!r} is missing for {', '.join(sorted(set(shapes) - names))}")


class Optimizer:
    """Common checks and state handling. ``lr`` may be changed between steps (schedules).

    Every rule here is elementwise, so when the parameters and gradients are consecutive views
    of one vector each (``LeNet5`` stores them so), ``step`` calls ``update(ALL, θ, g)`` once on
    the whole vectors instead of once per parameter: a few vector operations per step whatever
    the number of parameters, which is most of the cost of a step on one image. The state
    arrays are then views of one vector per slot, still saved and loaded per parameter.
    """

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
        flat = as_one_vector(list(params.values())), as_one_vector([grads[k] for k in params])
        self._flat = flat if flat[0] is not None and flat[1] is not None else None
        self._flat_state: dict[str, np.ndarray] = {}

    def step(self) -> None:
        self.steps += 1
        if self._flat is not None:
            self.update(ALL, *self._flat)
            return
        for name, p in self.params.items():
            self.update(name, p, self.grads[name])

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        """Update parameter ``name`` (or, with name ``ALL``, the whole vector) in place."""
        raise NotImplementedError

    def slot(self, slot: str, name: str) -> np.ndarray | None:
        """State ``slot`` of parameter ``name`` (``ALL``: of the whole vector), None before its first step."""
        return self._flat_state.get(slot) if name == ALL else self.state[slot].get(name)

    def new_slot(self, slot: str, name: str, value: np.ndarray) -> np.ndarray:
        """Create state ``slot`` of parameter ``name`` (or ``ALL``) as a copy of ``value``."""
        if name != ALL:
            self.state[slot][name] = value.copy()
            return self.state[slot][name]
        return self._adopt(slot, value.copy())

    def _adopt(self, slot: str, flat: np.ndarray) -> np.ndarray:
        """Make ``flat`` the storage of state ``slot``, each parameter's entry a view of it."""
        self._flat_state[slot] = flat
        at = 0
        for name, p in self.params.items():
            self.state[slot][name] = flat[at:at + p.size].reshape(p.shape)
            at += p.size
        return flat

    def prepare_epoch(self, model, split, rng: np.random.Generator) -> None:
        """Called by the training loop before each pass (not on a mid-pass resume). Nothing
        to do for first-order methods; SDLM estimates its curvature here."""

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"{slot}.{name}": v.copy() for slot, arrays in self.state.items() for name, v in arrays.items()}
        out["steps"] = np.array(self.steps, dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, {k: p.shape for k, p in self.params.items()}, self.slots)
        self.steps = int(np.asarray(state.get("steps", 0)).reshape(-1)[0])
        self._flat_state = {}
        self.state = {slot: {} for slot in self.slots}
        for key, value in state.items():
            slot, _, name = key.partition(".")
            if slot in self.state:
                self.state[slot][name] = np.array(value, dtype=self.params[name].dtype)
        if self._flat is not None:  # one vector per complete slot again
            for slot, arrays in self.state.items():
                if set(arrays) == set(self.params):
                    self._adopt(slot, np.concatenate([arrays[n].reshape(-1) for n in self.params]))


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
            v = self.slot("velocity", name)
            if v is None:
                v = self.new_slot("velocity", name, g)
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
        m = self.slot("m", name)
        m = self.new_slot("m", name, np.zeros_like(p)) if m is None else m
        v = self.slot("v", name)
        v = self.new_slot("v", name, np.zeros_like(p)) if v is None else v
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
        self._scales: dict[str, np.ndarray] | None = None  # 1/(μ + h_kk), derived from the state
        self._lr_scale: tuple[float, np.ndarray | None] = (0.0, None)  # (η, η/(μ + h)) for ALL
        self._buf = np.empty(sum(p.size for p in params.values()), next(iter(params.values())).dtype)

    def prepare_epoch(self, model, split, rng: np.random.Generator) -> None:
        """h_kk for this pass, from ``samples`` training images drawn with ``rng``."""
        idx = rng.choice(len(split), size=min(self.samples, len(split)), replace=False)
        self.state["hessian"] = model.diag_hessian(model.prepare(split.images[idx]))
        self._scales, self._lr_scale = None, (0.0, None)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self._scales, self._lr_scale = None, (0.0, None)

    def _scale(self, name: str) -> np.ndarray:
        """1/(μ + h_kk) for parameter ``name`` (``ALL``: every value, as one vector)."""
        if self._scales is None:
            hessian = self.state["hessian"]
            if set(hessian) != set(self.params):
                raise RuntimeError("SDLM needs a curvature estimate first: call prepare_epoch(model, split, rng)")
            self._scales = {n: (1 / (self.mu + hessian[n])).astype(p.dtype) for n, p in self.params.items()}
            self._scales[ALL] = np.concatenate([self._scales[n].reshape(-1) for n in self.params])
        return self._scales[name]

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        if name != ALL:
            p -= self.lr * self._scale(name) * g
            return
        # per-pattern steps are many and small: η/(μ + h) is kept while η stays, so the whole
        # network's step is two vector operations
        if self._lr_scale[0] != self.lr:
            self._lr_scale = (self.lr, self.lr * self._scale(ALL))
        p -= np.multiply(g, self._lr_scale[1], out=self._buf)


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
