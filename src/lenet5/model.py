"""LeNet-5 as a named sequence of layers, built from a preset.

The stages carry the 1998 paper's names: C1, S2, C3, S4, C5, F6, OUTPUT. Parameter names
(``c1.weight``, ``f6.bias``, ...) and shapes are those of the PyTorch replica, so a
``state_dict`` moves between the two engines unchanged.

At the model's boundary arrays use the usual layout, images (N, 1, 28, 28) and logits
(N, 10); inside, layers work batch-last (see ``lenet5.ops``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._cpu import default_threads, parallel_map
from . import lecun1998
from .layers import (RBF, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid,
                     Squash, Subsample2d, Tanh, map_criterion, mse_criterion, softmax_cross_entropy)

Init = Callable[..., np.ndarray]  # (rng, name, array[, layer]) -> initial values
Criterion = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


# --------------------------------------------------------------------------- initialisers
def _fans(w: np.ndarray) -> tuple[int, int]:
    """fan_in, fan_out of a weight (out, in, *kernel)."""
    receptive = int(np.prod(w.shape[2:])) if w.ndim > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def seed_tanh_init(rng: np.random.Generator, name: str, w: np.ndarray) -> np.ndarray:
    """LeCun uniform ±√(3/fan_in) for convolutions; ±4·√(6/(fan_in+fan_out)) for F6, OUTPUT.

    The second is Glorot's bound scaled by 4, the usual choice in front of a sigmoid.
    """
    fan_in, fan_out = _fans(w)
    bound = np.sqrt(3.0 / fan_in) if w.ndim == 4 else 4.0 * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=w.shape)


def xavier_uniform_init(rng: np.random.Generator, name: str, w: np.ndarray) -> np.ndarray:
    """Glorot/Xavier uniform: ±√(6/(fan_in+fan_out))."""
    fan_in, fan_out = _fans(w)
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=w.shape)


def kaiming_uniform_init(rng: np.random.Generator, name: str, w: np.ndarray) -> np.ndarray:
    """He/Kaiming uniform ±√(6/fan_in), for layers followed by ReLU; Xavier for OUTPUT."""
    if name.startswith("output."):
        return xavier_uniform_init(rng, name, w)
    fan_in, _ = _fans(w)
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=w.shape)


def lecun1998_init(rng: np.random.Generator, name: str, p: np.ndarray, layer: Layer | None = None) -> np.ndarray:
    """Every trainable value (weights, biases, subsampling coefficients) uniform in ±2.4/F,
    F the fan-in of its unit: 25·(connected input maps) for a convolution, 4 for a
    subsampling unit, the input size for F6 (Appendix A)."""
    if isinstance(layer, Conv2d):
        w = layer.params["weight"]
        connected = (np.full(w.shape[:2], True) if layer.mask is None else layer.mask[:, :, 0, 0] > 0).sum(axis=1)
        fan_in = (connected * w.shape[2] * w.shape[3]).astype(float)  # per output map
        bound = 2.4 / fan_in
        if p.ndim == 4:
            out = rng.uniform(-1, 1, size=p.shape) * bound[:, None, None, None]
            return out if layer.mask is None else out * layer.mask
        return rng.uniform(-1, 1, size=p.shape) * bound
    fan_in = 4 if isinstance(layer, Subsample2d) else layer.params["weight"].shape[1]
    return lecun1998.init_2_4(rng, name, p, fan_in)


def scale_pixels(images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    x = images.astype(dtype)
    x *= 1 / 255
    return x[:, None]


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """A named architecture: its layers, initialisation, input scaling and training defaults."""

    name: str
    description: str
    build: Callable[[np.dtype], list[tuple[str, Layer]]]
    init: Init
    prepare: Callable[[np.ndarray, np.dtype], np.ndarray] = scale_pixels
    defaults: dict = field(default_factory=dict)
    criteria: dict[str, Criterion] = field(default_factory=lambda: {"cross-entropy": softmax_cross_entropy})
    #: whether ``init`` draws every parameter itself (biases included) from (rng, name, p, layer)
    init_all: bool = False
    input_size: int = 28


def _seed_layers(act: type[Layer]) -> Callable[[np.dtype], list[tuple[str, Layer]]]:
    def build(dtype: np.dtype) -> list[tuple[str, Layer]]:
        return [
            ("c1", Conv2d(1, 6, 5, pad=2, dtype=dtype, input_grad=False)),
            ("c1_act", act()),
            ("s2", AvgPool2d()),
            ("c3", Conv2d(6, 16, 5, dtype=dtype)),
            ("c3_act", act()),
            ("s4", AvgPool2d()),
            ("c5", Conv2d(16, 120, 5, dtype=dtype)),
            ("c5_act", act()),
            ("flatten", Flatten()),
            ("f6", Linear(120, 84, dtype=dtype)),
            ("f6_act", Sigmoid()),
            ("output", Linear(84, 10, dtype=dtype)),
        ]
    return build


def _modern_layers(dtype: np.dtype) -> list[tuple[str, Layer]]:
    return [
        ("c1", Conv2d(1, 6, 5, pad=2, dtype=dtype, input_grad=False)),
        ("c1_bn", BatchNorm2d(6, dtype=dtype)),
        ("c1_act", ReLU()),
        ("s2", MaxPool2d()),
        ("c3", Conv2d(6, 16, 5, dtype=dtype)),
        ("c3_bn", BatchNorm2d(16, dtype=dtype)),
        ("c3_act", ReLU()),
        ("s4", MaxPool2d()),
        ("c5", Conv2d(16, 120, 5, dtype=dtype)),
        ("c5_act", ReLU()),
        ("flatten", Flatten()),
        ("c5_drop", Dropout(0.1)),
        ("f6", Linear(120, 84, dtype=dtype)),
        ("f6_act", ReLU()),
        ("f6_drop", Dropout(0.1)),
        ("output", Linear(84, 10, dtype=dtype)),
    ]


def _lecun1998_layers(dtype: np.dtype) -> list[tuple[str, Layer]]:
    return [
        ("c1", Conv2d(1, 6, 5, dtype=dtype, input_grad=False)),
        ("c1_act", Squash()),
        ("s2", Subsample2d(6, dtype=dtype)),
        ("s2_act", Squash()),
        ("c3", Conv2d(6, 16, 5, dtype=dtype, connections=lecun1998.C3_TABLE.T)),
        ("c3_act", Squash()),
        ("s4", Subsample2d(16, dtype=dtype)),
        ("s4_act", Squash()),
        ("c5", Conv2d(16, 120, 5, dtype=dtype)),
        ("c5_act", Squash()),
        ("flatten", Flatten()),
        ("f6", Linear(120, 84, dtype=dtype)),
        ("f6_act", Squash()),
        ("output", RBF(lecun1998.rbf_centres(dtype))),
    ]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "seed-tanh",
            "C1-S2-C3-S4-C5 with tanh and average pooling, sigmoid F6, softmax output",
            _seed_layers(Tanh),
            seed_tanh_init,
        ),
        Preset(
            "seed-sigmoid",
            "the seed-tanh network with sigmoid everywhere and Xavier-uniform init",
            _seed_layers(Sigmoid),
            xavier_uniform_init,
            # plain SGD stays at chance for 10 epochs (gradients fade through four sigmoids);
            # Adam's per-parameter scaling trains it (measured on the 5k MNIST subset: 9.8% vs 91.5%)
            defaults={"optimizer": "adam", "lr": 0.003},
        ),
        Preset(
            "modern",
            "LeNet-5 layout with batch norm, ReLU, max pooling and dropout, trained with AdamW, "
            "one-cycle schedule and augmentation (affine for digits, mirror+shift for Fashion-MNIST)",
            _modern_layers,
            kaiming_uniform_init,
            defaults={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05, "schedule": "onecycle",
                      "epochs": 30, "batch_size": 64, "augment": "auto"},
        ),
        Preset(
            "lecun1998",
            "LeNet-5 as published in 1998: 32x32 input, trainable subsampling, partial C3, "
            "scaled tanh, RBF output with the MAP criterion, SDLM per-sample training",
            _lecun1998_layers,
            lecun1998_init,
            prepare=lecun1998.prepare_input,
            # lr 5e-5 is the paper's η schedule ×0.1: as printed (5e-4 first) it diverged with our
            # curvature estimate (loss 84 -> 210 within one pass); a tenth trains stably.
            defaults={"optimizer": "sdlm", "lr": 0.00005, "schedule": "lecun1998", "epochs": 20, "batch_size": 1,
                      "augment": "none"},
            criteria={"map": map_criterion, "mse": mse_criterion},
            init_all=True,
            input_size=32,
        ),
    ]
}
DEFAULT_PRESET = "seed-tanh"


def make_criterion(preset: Preset, name: str | None = None, map_j: float = 0.1) -> tuple[str, Criterion]:
    """(name, criterion) for a preset: its first criterion unless ``name`` picks another; the
    MAP criterion gets its constant j bound here."""
    name = name or next(iter(preset.criteria))
    if name not in preset.criteria:
        raise ValueError(f"preset {preset.name!r} has no criterion {name!r}; "
                         f"choose one of: {', '.join(preset.criteria)}")
    fn = preset.criteria[name]
    return name, (lambda logits, labels: fn(logits, labels, map_j)) if fn is map_criterion else fn


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------- the model
class LeNet5:
    """A LeNet-5 network: forward, loss, backward, named parameters and gradients.

    >>> model = LeNet5("seed-tanh", seed=0)
    >>> logits = model.forward(x)          # x: (N, 1, 28, 28) float, logits: (N, 10)
    >>> loss, dlogits = model.loss(logits, labels)
    >>> model.backward(dlogits)            # fills model.grads()
    """

    #: below this many images per thread, splitting a training batch costs more than it saves
    #: (measured on 2 cores: batch 64 gains nothing from two threads, batch 256 gains ~20%)
    MIN_PER_THREAD = 64
    #: larger training batches are cut into micro-batches of at most this size, which keeps
    #: each one's working set in cache; their gradients are summed
    MAX_CHUNK = 128
    #: inference works through large inputs in chunks this big, which keeps im2col in cache
    INFER_CHUNK = 128

    def __init__(self, preset: str = DEFAULT_PRESET, seed: int | None = 0,
                 dtype: np.dtype | type = np.float32, threads: int | None = None,
                 criterion: str | None = None, map_j: float = 0.1, dropout: float | None = None) -> None:
        self.preset = get_preset(preset)
        self.criterion_name, self.criterion = make_criterion(self.preset, criterion, map_j)
        self.map_j = map_j
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.layers: list[tuple[str, Layer]] = self.preset.build(self.dtype)
        self.dropout = dropout
        if dropout is not None:  # override the preset's dropout probability
            for _, layer in self.layers:
                if isinstance(layer, Dropout):
                    layer.p = Dropout(dropout).p  # validates the value
        self.reset_parameters(np.random.default_rng(seed))
        self._replicas: list[LeNet5] = []
        self._parts: list[slice] | None = None  # how the last forward split its batch
        self.activations: dict[str, np.ndarray] = {}
        self.training = True

    # -- parameters -----------------------------------------------------------------------
    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Weights from the preset's initialiser (in layer order), biases zero, batch-norm
        scales one — or, for presets that say so (``init_all``), every value from the initialiser."""
        for ln, layer in self.layers:
            for pn, p in layer.params.items():
                name = f"{ln}.{pn}"
                if self.preset.init_all:
                    p[...] = self.preset.init(rng, name, p, layer)
                elif pn == "weight" and p.ndim > 1:
                    p[...] = self.preset.init(rng, name, p)
                else:
                    p[...] = 1 if pn == "weight" else 0
            for bn, b in layer.buffers.items():
                if bn in ("running_mean", "running_var", "num_batches_tracked"):
                    b[...] = 1 if bn == "running_var" else 0

    def params(self) -> dict[str, np.ndarray]:
        """Parameters by name ('c1.weight', ...). The arrays are the model's own, not copies."""
        return {f"{ln}.{pn}": p for ln, layer in self.layers for pn, p in layer.params.items()}

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients by parameter name, as left by the last backward()."""
        return {f"{ln}.{pn}": g for ln, layer in self.layers for pn, g in layer.grads.items()}

    def buffers(self) -> dict[str, np.ndarray]:
        """Saved, untrained state by name ('c1_bn.running_mean', ...)."""
        return {f"{ln}.{bn}": b for ln, layer in self.layers for bn, b in layer.buffers.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer, keyed like the PyTorch replica's state_dict()."""
        return {name: p.copy() for name, p in {**self.params(), **self.buffers()}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters and buffers; names and shapes must match exactly."""
        own = {**self.params(), **self.buffers()}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state dict mismatch for preset {self.preset.name!r}: "
                           f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if p.ndim == 0 and value.shape == (1,):  # a scalar counter stored as one element
                value = value.reshape(())
            if value.shape != p.shape:
                raise ValueError(f"{name}: expected shape {p.shape}, got {value.shape}")
            p[...] = value

    def num_parameters(self) -> int:
        """Trainable values (C3's unconnected kernels, fixed at zero, do not count)."""
        return sum(layer.num_trainable() if hasattr(layer, "num_trainable") else
                   sum(p.size for p in layer.params.values()) for _, layer in self.layers)

    def layer(self, name: str) -> Layer:
        return dict(self.layers)[name]

    def train(self, mode: bool = True) -> "LeNet5":
        """Training mode (dropout active, batch norm on batch statistics) or, with False, inference."""
        self.training = mode
        for _, layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> "LeNet5":
        return self.train(False)

    @property
    def stochastic(self) -> bool:
        """Whether training depends on more than the batch (dropout masks, batch statistics)."""
        return any(isinstance(layer, (Dropout, BatchNorm2d)) for _, layer in self.layers)

    def seed_step(self, seed: list[int]) -> None:
        """Give the dropout layers a generator for one step, from (seed, epoch, batch): a run can
        then be repeated or resumed exactly, whatever happened before that step."""
        for i, (_, layer) in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng([*seed, i])

    # -- computation ----------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 28, 28) -> the network's float input (N, 1, 28, 28)."""
        return self.preset.prepare(images, self.dtype)

    def forward(self, x: np.ndarray, keep: list[str] | None = None) -> np.ndarray:
        """x (N, 1, 28, 28) or (N, 28, 28) -> logits (N, 10).

        ``keep``: names of layers whose outputs to record in ``self.activations`` (as
        (N, C, H, W) or (N, F) copies), e.g. for plotting feature maps.
        A large batch is split into micro-batches run on ``self.threads`` threads (see
        ``_cpu.parallel_map``); the result is the same up to float round-off.
        """
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(f"expected images (N, 1, H, W) or (N, H, W), got shape {x.shape}")
        if x.shape[2:] != (self.preset.input_size,) * 2:
            raise ValueError(f"preset {self.preset.name} takes {self.preset.input_size}x{self.preset.input_size} "
                             f"inputs (see model.prepare), got {x.shape[2]}x{x.shape[3]}")
        n = len(x)
        k = max(min(self.threads, n // self.MIN_PER_THREAD), -(-n // self.MAX_CHUNK))
        if k <= 1 or keep or (self.training and self.stochastic):  # batch norm needs the whole batch
            self._parts = None
            return self._forward(x, keep)
        bounds = np.linspace(0, n, k + 1).astype(int)
        self._parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        workers = [self, *self._get_replicas(k - 1)]
        logits = parallel_map(lambda job: job[0]._forward(x[job[1]]), list(zip(workers, self._parts)),
                              self.threads)
        return np.concatenate(logits)

    def _forward(self, x: np.ndarray, keep: list[str] | None = None) -> np.ndarray:
        h = x.transpose(1, 2, 3, 0)  # a view; C1's padding copy makes it batch-last for real
        self.activations = {}
        for name, layer in self.layers:
            h = layer.forward(h)
            if keep and name in keep:
                self.activations[name] = np.moveaxis(h, -1, 0).copy()
        return np.ascontiguousarray(h.T)

    def backward(self, dlogits: np.ndarray) -> None:
        """dlogits (N, 10) -> fills grads() for every parameter.

        After a split forward, each thread back-propagates its rows of dlogits and the
        partial gradients are summed (dlogits already carries the 1/N of the mean loss).
        """
        if self._parts is None:
            return self._backward(dlogits)
        workers = [self, *self._replicas[: len(self._parts) - 1]]
        parallel_map(lambda job: job[0]._backward(dlogits[job[1]]), list(zip(workers, self._parts)), self.threads)
        for name, g in self.grads().items():
            for replica in workers[1:]:
                g += replica.grads()[name]

    def _backward(self, dlogits: np.ndarray) -> None:
        d = dlogits.T
        for _, layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:  # the first layer does not propagate to the input
                break

    def _get_replicas(self, k: int) -> list["LeNet5"]:
        """k models sharing this one's parameter arrays, each with its own caches and grads."""
        while len(self._replicas) < k:
            replica = LeNet5(self.preset.name, seed=None, dtype=self.dtype, threads=1,
                             criterion=self.criterion_name, map_j=self.map_j, dropout=self.dropout)
            for (_, mine), (_, theirs) in zip(self.layers, replica.layers):
                theirs.params = mine.params  # the same dicts: shared, always up to date
                theirs.buffers = mine.buffers
            self._replicas.append(replica)
        return self._replicas[:k]

    def loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """The preset's criterion: (loss, dlogits). Softmax cross-entropy, except lecun1998
        (MAP, with its constant j = ``map_j``, or MSE)."""
        return self.criterion(logits, labels)

    def diag_hessian(self, x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Gauss-Newton estimate of ∂²E/∂θ² for every parameter, averaged over the batch
        (Appendix C of the paper): a second backward pass in which each layer maps the
        second derivatives of its outputs to those of its inputs and parameters."""
        _, dlogits = self.loss(self._forward(x), labels)
        d = dlogits.T
        out: dict[str, np.ndarray] = {}
        for i, (ln, layer) in enumerate(reversed(self.layers)):
            if not hasattr(layer, "backward_diag"):
                raise ValueError(f"layer {ln} ({layer!r}) has no second-order backward")
            d, hess = layer.backward_diag(d)
            out.update({f"{ln}.{pn}": h for pn, h in hess.items()})
            if d is None:
                break
        return out

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, 10) for uint8 images (N, 28, 28), as fast as this machine allows.

        Each thread takes a contiguous share of the images and runs it through its own
        replica in cache-sized chunks; nothing is kept for a backward pass.
        """
        n = len(images)
        k = max(1, min(self.threads, n // self.INFER_CHUNK))
        bounds = np.linspace(0, n, k + 1).astype(int)
        workers = [self, *self._get_replicas(k - 1)]
        was_training = self.training
        for w in workers:
            w.eval()

        def run(job: tuple[LeNet5, int, int]) -> np.ndarray:
            model, a, b = job
            return np.concatenate([model._forward(model.prepare(images[i:min(i + self.INFER_CHUNK, b)]))
                                   for i in range(a, b, self.INFER_CHUNK)] or [np.zeros((0, 10), self.dtype)])

        self._parts = None
        jobs = [(w, a, b) for w, a, b in zip(workers, bounds[:-1], bounds[1:])]
        try:
            return np.concatenate(parallel_map(run, jobs, self.threads))
        finally:
            self.train(was_training)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for uint8 images (N, 28, 28)."""
        z = self.infer(images)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def summary(self) -> list[dict]:
        """One row per layer: name, kind, output shape (without batch), trainable parameters."""
        shape = (1, self.preset.input_size, self.preset.input_size, 1)
        rows: list[dict] = []
        for name, layer in self.layers:
            shape = layer.output_shape(shape)
            count = layer.num_trainable() if hasattr(layer, "num_trainable") else sum(
                p.size for p in layer.params.values())
            rows.append({"name": name, "layer": repr(layer), "output_shape": list(shape[:-1]), "params": int(count)})
        return rows

    def __repr__(self) -> str:
        return f"LeNet5(preset={self.preset.name!r}, dtype={self.dtype}, params={self.num_parameters()})"
