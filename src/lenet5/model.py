"""LeNet-5 as a named sequence of layers, built from a preset (``lenet5.presets``).

The stages carry the 1998 paper's names: C1, S2, C3, S4, C5, F6, OUTPUT. Parameter names
(``c1.weight``, ``f6.bias``, ...) and shapes are those of the PyTorch replica, so a
``state_dict`` moves between the two engines unchanged.

At the model's boundary arrays use the usual layout: network inputs (N, 1, S, S) with S the
preset's input size (28, or 32 for lecun1998; ``prepare`` makes them from uint8 (N, 28, 28)
images) and outputs (N, 10); inside, layers work batch-last (see ``lenet5.ops``). How a batch
is spread over the CPU's cores is ``lenet5._cpu``'s business, not this module's.
"""

from __future__ import annotations

import numpy as np

from ._cpu import MicroBatches, default_threads
from .engine import SingleProcess
from .layers import BatchNorm2d, Dropout, Layer
from .losses import probabilities
from .optim import Optimizer, make_optimizer
from .presets import DEFAULT_PRESET, PRESETS, ModelSpec, Preset, TrainConfig

__all__ = ["DEFAULT_PRESET", "PRESETS", "LeNet5"]


class LeNet5(SingleProcess):
    """A LeNet-5 network: forward, backward, named parameters and gradients.

    >>> model = LeNet5("seed-tanh", seed=0)
    >>> logits = model.forward(model.prepare(images))   # images: uint8 (N, 28, 28); logits (N, 10)
    >>> loss, dlogits = Criterion().loss(logits, labels)  # lenet5.losses: the training step's business
    >>> model.backward(dlogits)                          # fills model.grads()
    """

    def __init__(self, preset: str = DEFAULT_PRESET, seed: int | None = 0,
                 dtype: np.dtype | type | str = np.float32, threads: int | None = None,
                 dropout: float | None = None, widths: tuple[int, int, int] | None = None) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.spec = ModelSpec(preset, None if widths is None else tuple(widths), dropout, self.dtype.name)
        self.preset: Preset = self.spec.definition
        self.layers: list[tuple[str, Layer]] = self.spec.layers()
        self._share_storage()
        #: batch norm and dropout see the whole batch at once (it is never split over the cores)
        self._whole_batch = any(isinstance(layer, (Dropout, BatchNorm2d)) for _, layer in self.layers)
        self.reset_parameters(np.random.default_rng(seed))
        self.activations: dict[str, np.ndarray] = {}
        self.training = True
        self._cpu = MicroBatches(self, default_threads() if threads is None else max(1, int(threads)))
        self._one = self.preset.one_image(self) if self.preset.one_image else None
        self._one_pass = False  # whether the last forward went through the single-image path

    @classmethod
    def from_spec(cls, spec: ModelSpec, seed: int | None = 0, threads: int | None = None) -> "LeNet5":
        return cls(spec.preset, seed=seed, dtype=spec.dtype, threads=threads, dropout=spec.dropout,
                   widths=spec.widths)

    @classmethod
    def from_config(cls, config: TrainConfig) -> "LeNet5":
        return cls.from_spec(config.spec, seed=config.seed)

    @property
    def widths(self) -> tuple[int, int, int] | None:
        return self.spec.widths

    def make_optimizer(self, config: TrainConfig) -> Optimizer:
        """The optimizer ``config`` names, over this model's live parameters and gradients."""
        return make_optimizer(config, self.params(), self.grads())

    # -- parameters -----------------------------------------------------------------------
    def _share_storage(self) -> None:
        """Re-home every parameter (and every gradient) as a view into one contiguous vector,
        in ``params()`` order: the layers see ordinary arrays, and an optimizer can update the
        whole network in a few vector operations (``lenet5.optim.as_one_vector`` finds them)."""
        for attr in ("params", "grads"):
            arrays = [(layer, name, a) for _, layer in self.layers for name, a in getattr(layer, attr).items()]
            flat = np.zeros(sum(a.size for _, _, a in arrays), self.dtype)
            at = 0
            for layer, name, a in arrays:
                view = flat[at:at + a.size].reshape(a.shape)
                view[...] = a
                getattr(layer, attr)[name] = view
                at += a.size
            setattr(self, f"_flat_{attr}", flat)

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
            layer.reset_buffers()

    def params(self) -> dict[str, np.ndarray]:
        """Trainable parameters by name ('c1.weight', ...): the model's own arrays, not copies."""
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
        return sum(layer.num_trainable() for _, layer in self.layers)

    def layer(self, name: str) -> Layer:
        return dict(self.layers)[name]

    def replica(self) -> "LeNet5":
        """A model sharing this one's parameter and buffer arrays, with its own caches and grads."""
        twin = LeNet5.from_spec(self.spec, seed=None, threads=1)
        for (_, mine), (_, theirs) in zip(self.layers, twin.layers):
            theirs.params = mine.params  # the same dicts: shared, always up to date
            theirs.buffers = mine.buffers
        return twin

    def train(self, mode: bool = True) -> "LeNet5":
        """Training mode (dropout active, batch norm on batch statistics) or, with False, inference."""
        self.training = mode
        for _, layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> "LeNet5":
        return self.train(False)

    def seed_step(self, seed: list[int]) -> None:
        """Give the dropout layers (if any) a generator for one step, from (seed, epoch, batch): a run can
        then be repeated or resumed exactly, whatever happened before that step."""
        for i, (_, layer) in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng([*seed, i])

    # -- computation ----------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 28, 28) -> the network's float input (N, 1, S, S), S = input size."""
        return self.preset.prepare(images, self.dtype)

    def forward(self, x: np.ndarray, keep: list[str] | None = None) -> np.ndarray:
        """x (N, 1, S, S) or (N, S, S) -> outputs (N, 10), S the preset's input size.

        ``keep``: names of layers whose outputs to record in ``self.activations`` (as
        (N, C, H, W) or (N, F) copies), e.g. for plotting feature maps.
        A large batch may be split over the CPU's cores (``lenet5._cpu.MicroBatches``); the
        result is the same up to float round-off.
        """
        if x.ndim == 3:
            x = x[:, None]
        size = self.preset.input_size
        if x.ndim != 4 or x.shape[1:] != (1, size, size):
            raise ValueError(f"preset {self.preset.name} takes inputs (N, 1, {size}, {size}) "
                             f"(see model.prepare), got shape {x.shape}")
        self._one_pass = self._one is not None and len(x) == 1 and self.training and not keep
        if self._one_pass:  # per-pattern training: the lean path, same math (lenet5.persample)
            return self._one.forward(x.astype(self.dtype, copy=False))
        if keep:
            return self.forward_pass(x, keep)
        return self._cpu.forward(x, whole=self.training and self._whole_batch)  # batch norm: whole batch

    def forward_pass(self, x: np.ndarray, keep: list[str] | None = None) -> np.ndarray:
        """One pass of x (N, 1, S, S) through the layers on this thread -> outputs (N, 10)."""
        h = x.transpose(1, 2, 3, 0)  # a view; C1's padding copy makes it batch-last for real
        self.activations = {}
        for name, layer in self.layers:
            h = layer.forward(h)
            if keep and name in keep:
                self.activations[name] = np.moveaxis(h, -1, 0).copy()
        return np.ascontiguousarray(h.T)

    def backward(self, dlogits: np.ndarray) -> None:
        """dlogits (N, 10) -> fills grads() for every parameter (after a forward of N images)."""
        if self._one_pass:
            return self._one.backward(dlogits)
        self._cpu.backward(dlogits)

    def backward_pass(self, dlogits: np.ndarray) -> None:
        """Back-propagate dlogits (N, 10) through the layers on this thread."""
        d = dlogits.T
        for _, layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:  # the first layer does not propagate to the input
                break

    def diag_hessian(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Gauss-Newton estimate of ∂²E/∂θ² for every parameter, averaged over the batch
        (Appendix C of the paper): a second backward pass in which each layer maps the
        second derivatives of its outputs to those of its inputs and parameters.

        The pass is seeded by the OUTPUT layer itself: the RBF units know the second derivative
        of the paper's criterion with respect to their inputs (``lecun1998.RBF.backward_diag``),
        so only the batch size of the seed matters here."""
        outputs = self.forward_pass(x)
        d: np.ndarray | None = np.zeros_like(outputs.T)
        out: dict[str, np.ndarray] = {}
        for ln, layer in reversed(self.layers):
            d, hess = layer.backward_diag(d)
            out.update({f"{ln}.{pn}": h for pn, h in hess.items()})
            if d is None:
                break
        return out

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Outputs (N, 10) for uint8 images (N, 28, 28) in inference mode, as fast as this
        machine allows; nothing is kept for a backward pass."""
        return self._cpu.infer(images, 10, self.dtype)

    def predict(self, images: np.ndarray, map_j: float = 0.1) -> np.ndarray:
        """Class probabilities (N, 10) for uint8 images (N, 28, 28), as the preset's output
        defines them (``lenet5.losses.probabilities``; for lecun1998's RBF outputs, the MAP
        criterion's rubbish class with constant ``map_j`` keeps its share)."""
        return probabilities(self.preset.output, self.infer(images), map_j)

    def summary(self) -> list[dict]:
        """One row per layer: name, kind, output shape (without batch), trainable parameters."""
        shape = (1, self.preset.input_size, self.preset.input_size, 1)
        rows: list[dict] = []
        for name, layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append({"name": name, "layer": repr(layer), "output_shape": list(shape[:-1]),
                         "params": int(layer.num_trainable())})
        return rows

    def __repr__(self) -> str:
        widths = f", widths={self.widths}" if self.widths else ""
        return f"LeNet5(preset={self.preset.name!r}{widths}, dtype={self.dtype}, params={self.num_parameters()})"
