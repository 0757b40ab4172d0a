"""Presets: each named network is the single source of everything it is.

A ``Preset`` knows its layers, initialisation, input coding, output kind, criteria, which
optional settings it accepts, and its whole default training recipe. Its layer list is *the*
description of the network: the NumPy engine runs it, and the PyTorch replica
(``lenet5.torch_replica``), the ONNX graph (``lenet5.onnx_export``), the JAX peer of
``lenet5 bench`` and the FLOP count (``lenet5.flops``) are assembled from it, layer by layer.

``ModelSpec`` names one network exactly (preset, channel widths, dropout, dtype): a checkpoint
records it, and any engine rebuilds the network from it. ``resolve(name, **overrides)`` turns a
preset and the options a user gave into the complete ``TrainConfig`` that the CLI, the Python
API (``lenet5.train.fit``) and the run directory all share: unset options take the preset's
recipe, then ``TrainConfig``'s defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import lecun1998
from .augment import AUGMENTS
from .datasets import auto_augment
from .errors import Lenet5Error
from .losses import Criterion
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .persample import OneImage
from .schedules import SCHEDULES

Init = Callable[..., np.ndarray]  # (rng, name, array[, layer]) -> initial values


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


@dataclass(frozen=True)
class InputCoding:
    """How uint8 pixels (N, 28, 28) become the network's input (N, 1, 28 + 2·pad, 28 + 2·pad):
    x = pixel/255 · scale + shift, padded by ``pad`` pixels of the background value ``shift``.

    The default is plain pixel/255; the 1998 network codes paper as −0.1 and ink as 1.175 on a
    32×32 field (``lecun1998.CODING``). Every engine and the ONNX graph apply this one coding.
    """

    scale: float = 1.0
    shift: float = 0.0
    pad: int = 0

    @property
    def size(self) -> int:
        return 28 + 2 * self.pad

    def __call__(self, images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        if not self.pad:
            x = images.astype(dtype)
            x *= self.scale / 255
            if self.shift:
                x += self.shift
            return x[:, None]
        p, side = self.pad, self.size
        x = np.full((len(images), 1, side, side), self.shift, dtype=dtype)
        x[:, 0, p:p + 28, p:p + 28] = images.astype(dtype) * (self.scale / 255) + self.shift
        return x


#: pixel/255: every preset but lecun1998
scale_pixels = InputCoding()


# --------------------------------------------------------------------------- layer lists
Layers = list[tuple[str, Layer]]


def _seed_layers(act: type[Layer]) -> Callable[[np.dtype], Layers]:
    def build(dtype: np.dtype) -> Layers:
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


def modern_layers(c1: int = 6, c3: int = 16, c5: int = 120) -> Callable[[np.dtype], Layers]:
    """The modern network's layers with C1, C3 and C5 ``c1``, ``c3``, ``c5`` channels wide (the
    preset: LeNet-5's 6, 16, 120)."""
    def build(dtype: np.dtype) -> Layers:
        return [
            ("c1", Conv2d(1, c1, 5, pad=2, dtype=dtype, input_grad=False)),
            ("c1_bn", BatchNorm2d(c1, dtype=dtype)),
            ("c1_act", ReLU()),
            ("s2", MaxPool2d()),
            ("c3", Conv2d(c1, c3, 5, dtype=dtype)),
            ("c3_bn", BatchNorm2d(c3, dtype=dtype)),
            ("c3_act", ReLU()),
            ("s4", MaxPool2d()),
            ("c5", Conv2d(c3, c5, 5, dtype=dtype)),
            ("c5_act", ReLU()),
            ("flatten", Flatten()),
            ("c5_drop", Dropout(0.1)),
            ("f6", Linear(c5, 84, dtype=dtype)),
            ("f6_act", ReLU()),
            ("f6_drop", Dropout(0.1)),
            ("output", Linear(84, 10, dtype=dtype)),
        ]
    return build


def _lecun1998_layers(dtype: np.dtype) -> Layers:
    return [
        ("c1", Conv2d(1, 6, 5, dtype=dtype, input_grad=False)),
        ("c1_act", lecun1998.Squash()),
        ("s2", lecun1998.Subsample2d(6, dtype=dtype)),
        ("s2_act", lecun1998.Squash()),
        ("c3", Conv2d(6, 16, 5, dtype=dtype, connections=lecun1998.C3_TABLE.T)),
        ("c3_act", lecun1998.Squash()),
        ("s4", lecun1998.Subsample2d(16, dtype=dtype)),
        ("s4_act", lecun1998.Squash()),
        ("c5", Conv2d(16, 120, 5, dtype=dtype)),
        ("c5_act", lecun1998.Squash()),
        ("flatten", Flatten()),
        ("f6", Linear(120, 84, dtype=dtype)),
        ("f6_act", lecun1998.Squash()),
        ("output", lecun1998.RBF(lecun1998.rbf_centres(dtype))),
    ]


# --------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is: network, recipe, data, engine. Saved as a run's settings.

    Build it with ``resolve(preset, **overrides)`` so the preset's recipe fills what is unset.
    """

    preset: str = "seed-tanh"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    augment: str = "none"
    dropout: float | None = None
    criterion: str | None = None
    map_j: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    dataset: str = "mnist"
    data_dir: str | None = None
    train_limit: int | None = None
    val_split: float = 0.0
    #: evaluate the test set after every epoch (False: choosing a recipe on ``val_split`` without
    #: ever looking at the test set; the run's records then carry no test figures)
    test_each_epoch: bool = True
    #: C1, C3, C5 channels (modern only; None: LeNet-5's 6, 16, 120)
    widths: tuple[int, int, int] | None = None
    engine: str = "numpy"
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A checked copy with some options changed (the preset's recipe does not refill them)."""
        values = {**self.to_json(), **changes}
        return resolve(values.pop("preset"), **values)

    @property
    def spec(self) -> "ModelSpec":
        """The network this recipe trains."""
        return ModelSpec(self.preset, self.widths, self.dropout, self.dtype)

    @property
    def criterion_name(self) -> str:
        """The criterion it trains with: the one it names, or its preset's default."""
        return self.criterion or get_preset(self.preset).criteria[0]


def trained_criterion(meta: dict[str, Any], preset: "Preset") -> Criterion:
    """The criterion a checkpoint's run trained with (its recorded settings' criterion and MAP
    constant j), for evaluating and reading it as it was trained; a file without them (a bare
    state dict, an older version) or with values of the wrong kind gets its preset's own."""
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    name = settings.get("criterion")
    j = settings.get("map_j")
    return Criterion(name if name in preset.criteria else preset.criteria[0],
                     float(j) if isinstance(j, (int, float)) and not isinstance(j, bool) and math.isfinite(j) and j > 0
                     else TrainConfig.map_j)


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

#: options that earlier versions offered and that lost or tied on validation (docs/results.md),
#: with the value that meant "off": a run that recorded another value can be evaluated and
#: used for prediction, but not continued
REMOVED_OPTIONS = {"label_smoothing": 0.0, "cutout": 0, "ema": 0.0}
REMOVED_AUGMENTS = ("elastic-mild",)


@dataclass(frozen=True)
class Preset:
    """A named network: layers, initialisation, input coding, output, criteria, recipe."""

    name: str
    description: str
    build: Callable[[np.dtype], Layers]
    init: Init
    #: how uint8 pixels become the network's input
    coding: InputCoding = scale_pixels
    #: what the network's 10 outputs are: "logits" (softmax gives the class probabilities) or
    #: "rbf" (minus the squared distance of F6's output to each class's fixed centre)
    output: str = "logits"
    #: its training recipe: TrainConfig fields that differ from TrainConfig's defaults
    recipe: dict[str, Any] = field(default_factory=dict)
    #: criteria it can train with, the first being its default (names from lenet5.losses)
    criteria: tuple[str, ...] = ("cross-entropy",)
    #: the layers with other channel widths (C1, C3, C5); None: the preset takes no --widths
    widen: Callable[[int, int, int], Callable[[np.dtype], Layers]] | None = None
    #: optional settings it accepts beyond the common ones: "dropout", "criterion", "sdlm"
    options: frozenset[str] = frozenset()
    #: whether ``init`` draws every parameter itself (biases included) from (rng, name, p, layer)
    init_all: bool = False
    #: the paper's published error rates this network reproduces (training, test; percent), drawn
    #: beside a run's own (``lenet5.plots.plot_errors``); None: no published figure to compare
    paper_errors: dict[str, float] | None = None
    #: a lean single-image training pass (forward, backward) over a model's live parameters and
    #: gradients, for per-pattern training (``lenet5.persample``); None: the layers do it
    one_image: Callable[[Any], Any] | None = None

    @property
    def input_size(self) -> int:
        return self.coding.size

    def prepare(self, images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """uint8 images (N, 28, 28) -> the network's input (N, 1, S, S), S = ``input_size``."""
        return self.coding(images, dtype)

    def layers(self, dtype: np.dtype, widths: tuple[int, int, int] | None = None) -> Layers:
        """Its layer list; ``widths``: C1, C3 and C5 channels other than its own."""
        if widths is None:
            return self.build(dtype)
        if self.widen is None:
            raise Lenet5Error(f"--widths applies to --preset modern, not {self.name}")
        return self.widen(*check_widths(widths))(dtype)


def check_widths(widths: Any) -> tuple[int, int, int]:
    """Three channel counts (C1, C3, C5), each an integer from 1 to 1024."""
    values = tuple(widths) if isinstance(widths, (list, tuple)) else ()
    if len(values) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 1024
                                   for w in values):
        raise Lenet5Error(f"--widths must be three integers from 1 to 1024 (C1,C3,C5 channels), got {widths!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelSpec:
    """One network exactly: a preset, its channel widths, its dropout probability, its dtype.

    A checkpoint records it (``to_json``); every engine builds its network from
    ``spec.layers()`` (the NumPy engine runs them, the PyTorch replica and the ONNX graph map
    them one by one), so the same spec gives the same network everywhere.
    """

    preset: str = "seed-tanh"
    #: C1, C3, C5 channels (None: the preset's own)
    widths: tuple[int, int, int] | None = None
    #: the dropout layers' probability (None: the preset's own)
    dropout: float | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        p = get_preset(self.preset)
        if self.widths is not None:
            object.__setattr__(self, "widths", check_widths(self.widths))
            if p.widen is None:
                raise Lenet5Error(f"--widths applies to --preset modern, not {p.name}")
        if self.dropout is not None:
            if "dropout" not in p.options:
                raise Lenet5Error(f"--dropout applies to --preset modern, not {p.name}")
            if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
                    and 0 <= self.dropout < 1):
                raise Lenet5Error(f"--dropout must be in [0, 1), got {self.dropout!r}")
        if self.dtype not in ("float32", "float64"):
            raise Lenet5Error(f"--dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def definition(self) -> Preset:
        """Its preset."""
        return get_preset(self.preset)

    def layers(self) -> Layers:
        """A fresh layer list (untrained parameters) with this spec's widths and dropout."""
        layers = self.definition.layers(np.dtype(self.dtype), self.widths)
        if self.dropout is not None:
            for _, layer in layers:
                if isinstance(layer, Dropout):
                    layer.p = float(self.dropout)
        return layers

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "widths": None if self.widths is None else list(self.widths),
                "dropout": self.dropout, "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: Any) -> "ModelSpec":
        """A checked spec from its JSON form; a Lenet5Error names what is wrong."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not isinstance(d.get("preset"), str) or set(d) - fields:
            raise Lenet5Error(f"a model spec is an object with {', '.join(sorted(fields))}; got {str(d)[:120]}")
        widths = d.get("widths")
        return cls(d["preset"], tuple(widths) if isinstance(widths, list) else widths, d.get("dropout"),
                   d.get("dtype", "float32"))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "seed-tanh",
            "C1-S2-C3-S4-C5 with tanh and average pooling, sigmoid F6, softmax output",
            _seed_layers(Tanh), seed_tanh_init,
        ),
        Preset(
            "seed-sigmoid",
            "the seed-tanh network with sigmoid everywhere and Xavier-uniform init",
            _seed_layers(Sigmoid), xavier_uniform_init,
            # plain SGD stays at chance for 10 epochs (gradients fade through four sigmoids);
            # Adam's per-parameter scaling trains it (measured on the 5k MNIST subset: 9.8% vs 91.5%)
            recipe={"optimizer": "adam", "lr": 0.003},
        ),
        Preset(
            "modern",
            "LeNet-5 layout with batch norm, ReLU, max pooling and dropout, trained with AdamW, "
            "one-cycle schedule and augmentation (affine for digits, mirror+shift for Fashion-MNIST)",
            modern_layers(), kaiming_uniform_init,
            recipe={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05, "schedule": "onecycle",
                    "epochs": 30, "augment": "auto"},
            options=frozenset({"dropout"}),
            widen=modern_layers,
        ),
        Preset(
            "lecun1998",
            "LeNet-5 as published in 1998: 32x32 input, trainable subsampling, partial C3, "
            "scaled tanh, RBF output with the MAP criterion, SDLM per-sample training",
            _lecun1998_layers, lecun1998.init,
            coding=InputCoding(lecun1998.INK - lecun1998.BACKGROUND, lecun1998.BACKGROUND, lecun1998.PAD),
            output="rbf",
            # the paper's η schedule ×0.3 (1.5e-4 for the first two passes, then down to 3e-6):
            # as printed, the steps overshoot once the network saturates and its curvature
            # estimates collapse; ×0.3 was the best of 1, 0.5, 0.3 on a validation split
            # (docs/paper.md)
            recipe={"optimizer": "sdlm", "lr": 0.00015, "schedule": "lecun1998", "epochs": 20, "batch_size": 1},
            criteria=("map", "mse"),
            options=frozenset({"criterion", "sdlm"}),
            init_all=True,
            paper_errors={"test": 0.95, "training": 0.35},
            one_image=lambda model: OneImage(model.params(), model.grads(), lecun1998.C3_TABLE.T,
                                             model.buffers()["output.centres"]),
        ),
    ]
}
DEFAULT_PRESET = "seed-tanh"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise Lenet5Error(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def resolve(preset: str = DEFAULT_PRESET, /, **overrides: Any) -> TrainConfig:
    """The complete, checked TrainConfig for ``preset`` with ``overrides`` (None = unset).

    Unset options take the preset's recipe, then TrainConfig's defaults; ``augment='auto'``
    becomes what the dataset calls for (``datasets.auto_augment``). Options the preset does not accept are
    refused with a one-line error. A ``preset`` among the overrides must agree with the first
    argument.
    """
    p = get_preset(preset)
    if overrides.get("preset", p.name) != p.name:
        raise Lenet5Error(f"preset {preset!r} given, but the options say preset {overrides['preset']!r}")
    unknown = sorted(set(overrides) - set(CONFIG_FIELDS))
    if unknown:
        raise Lenet5Error(f"unknown training option(s): {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None and k != "preset"}
    values = {**TrainConfig().to_json(), **p.recipe, **given, "preset": p.name}
    if values["widths"] is not None:  # JSON (config.json) gives a list
        values["widths"] = check_widths(values["widths"])
    if values["augment"] == "auto":
        values["augment"] = auto_augment(values["dataset"], values["data_dir"])
    _check(p, values, given)
    return TrainConfig(**values)


def _check(p: Preset, v: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse combinations that cannot mean what the user asked for."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise Lenet5Error(message)

    for key in ("epochs", "batch_size"):
        need(isinstance(v[key], int) and not isinstance(v[key], bool) and v[key] >= 1,
             f"--{key.replace('_', '-')} must be an integer >= 1, got {v[key]!r}")
    for key in ("lr", "momentum", "warmup_epochs", "weight_decay", "map_j", "val_split"):
        need(isinstance(v[key], (int, float)) and not isinstance(v[key], bool) and math.isfinite(v[key])
             and v[key] >= 0, f"--{key.replace('_', '-')} must be a finite number >= 0, got {v[key]!r}")
    need(v["lr"] > 0, f"--lr must be > 0, got {v['lr']}")
    need(v["momentum"] < 1, f"--momentum must be in [0, 1), got {v['momentum']}")
    need(v["val_split"] < 1, f"--val-split must be in [0, 1), got {v['val_split']}")
    need(v["warmup_epochs"] <= v["epochs"], f"--warmup-epochs {v['warmup_epochs']} is longer than the run "
                                            f"({v['epochs']} epochs)")
    need(isinstance(v["seed"], int) and not isinstance(v["seed"], bool) and v["seed"] >= 0,
         f"--seed must be an integer >= 0, got {v['seed']!r}")
    need(v["train_limit"] is None or (isinstance(v["train_limit"], int) and v["train_limit"] >= 1),
         f"--train-limit must be an integer >= 1, got {v['train_limit']!r}")
    need(v["engine"] in ("numpy", "torch"), f"--engine must be numpy or torch, got {v['engine']!r}")
    need(isinstance(v["device"], str), f"--device must be a string, got {v['device']!r}")
    need(v["engine"] == "torch" or v["device"] == "cpu",
         f"--device {v['device']} needs --engine torch (the NumPy engine runs on the CPU)")
    need(isinstance(v["test_each_epoch"], bool), f"test_each_epoch must be true or false, got {v['test_each_epoch']!r}")
    need(v["optimizer"] in ("sgd", "adam", "adamw", "sdlm"), f"unknown --optimizer {v['optimizer']!r}")
    need(v["schedule"] in SCHEDULES, f"unknown --schedule {v['schedule']!r}; choose one of: {', '.join(SCHEDULES)}")
    need(v["augment"] in AUGMENTS, f"unknown --augment {v['augment']!r}; choose one of: {', '.join(AUGMENTS)}")
    need(v["optimizer"] == "sgd" or not (v["momentum"] or v["nesterov"]),
         f"--momentum/--nesterov apply to --optimizer sgd, not {v['optimizer']}")
    need(not v["nesterov"] or v["momentum"] > 0, "--nesterov needs --momentum > 0")
    ModelSpec(p.name, v["widths"], v["dropout"], v["dtype"])  # the network's own checks: widths, dropout, dtype
    need("criterion" in p.options or "criterion" not in given,
         f"--criterion applies to --preset lecun1998, not {p.name}")
    need(v["criterion"] is None or v["criterion"] in p.criteria,
         f"preset {p.name!r} has no criterion {v['criterion']!r}; choose one of: {', '.join(p.criteria)}")
    need(v["optimizer"] != "sdlm" or "sdlm" in p.options,
         "--optimizer sdlm needs the second-order pass of --preset lecun1998")
    need(v["optimizer"] != "sdlm" or not v["weight_decay"], "--optimizer sdlm takes no --weight-decay")
    need(v["engine"] != "torch" or v["optimizer"] != "sdlm",
         "--engine torch has no SDLM optimizer; train lecun1998 with --engine numpy or --optimizer sgd")
