"""Presets: each named network is the single source of everything it is.

A ``Preset`` knows its layers, initialisation, input preparation, criteria, which optional
settings it accepts, the name of its PyTorch replica, and its whole default training recipe.
``resolve(name, **overrides)`` turns a preset and the options a user gave into the complete
``TrainConfig`` that the CLI, the Python API (``lenet5.train.fit``) and the run directory all
share: unset options take the preset's recipe, then ``TrainConfig``'s defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import lecun1998
from .augment import AUGMENTS
from .errors import Lenet5Error
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import CRITERIA
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


def scale_pixels(images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    x = images.astype(dtype)
    x *= 1 / 255
    return x[:, None]


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
    label_smoothing: float = 0.0
    cutout: int = 0
    #: decay of an exponential moving average of the weights, evaluated and saved (0: off)
    ema: float = 0.0
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


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class Preset:
    """A named network: layers, initialisation, input preparation, criteria, recipe."""

    name: str
    description: str
    build: Callable[[np.dtype], Layers]
    init: Init
    #: the PyTorch replica: a class of ``lenet5.torch_replica`` and its keyword arguments
    replica: tuple[str, dict[str, Any]]
    prepare: Callable[[np.ndarray, np.dtype], np.ndarray] = scale_pixels
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
    input_size: int = 28
    #: a lean single-image training pass (forward, backward) over a model's live parameters and
    #: gradients, for per-pattern training (``lenet5.persample``); None: the layers do it
    one_image: Callable[[Any], Any] | None = None

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


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "seed-tanh",
            "C1-S2-C3-S4-C5 with tanh and average pooling, sigmoid F6, softmax output",
            _seed_layers(Tanh), seed_tanh_init, ("SeedLeNet5", {"activation": "tanh"}),
        ),
        Preset(
            "seed-sigmoid",
            "the seed-tanh network with sigmoid everywhere and Xavier-uniform init",
            _seed_layers(Sigmoid), xavier_uniform_init, ("SeedLeNet5", {"activation": "sigmoid"}),
            # plain SGD stays at chance for 10 epochs (gradients fade through four sigmoids);
            # Adam's per-parameter scaling trains it (measured on the 5k MNIST subset: 9.8% vs 91.5%)
            recipe={"optimizer": "adam", "lr": 0.003},
        ),
        Preset(
            "modern",
            "LeNet-5 layout with batch norm, ReLU, max pooling and dropout, trained with AdamW, "
            "one-cycle schedule and augmentation (affine for digits, mirror+shift for Fashion-MNIST)",
            modern_layers(), kaiming_uniform_init, ("ModernLeNet5", {}),
            recipe={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05, "schedule": "onecycle",
                    "epochs": 30, "augment": "auto"},
            options=frozenset({"dropout"}),
            widen=modern_layers,
        ),
        Preset(
            "lecun1998",
            "LeNet-5 as published in 1998: 32x32 input, trainable subsampling, partial C3, "
            "scaled tanh, RBF output with the MAP criterion, SDLM per-sample training",
            _lecun1998_layers, lecun1998.init, ("LeCun1998", {}),
            prepare=lecun1998.prepare_input,
            # the paper's η schedule ×0.3 (1.5e-4 for the first two passes, then down to 3e-6):
            # as printed, the steps overshoot once the network saturates and its curvature
            # estimates collapse; ×0.3 was the best of 1, 0.5, 0.3 on a validation split
            # (README, "The 1998 network")
            recipe={"optimizer": "sdlm", "lr": 0.00015, "schedule": "lecun1998", "epochs": 20, "batch_size": 1},
            criteria=("map", "mse"),
            options=frozenset({"criterion", "sdlm"}),
            init_all=True,
            input_size=32,
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
        from .datasets import auto_augment

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
    for key in ("lr", "momentum", "warmup_epochs", "weight_decay", "map_j", "val_split", "label_smoothing", "ema"):
        need(isinstance(v[key], (int, float)) and not isinstance(v[key], bool) and math.isfinite(v[key])
             and v[key] >= 0, f"--{key.replace('_', '-')} must be a finite number >= 0, got {v[key]!r}")
    need(v["lr"] > 0, f"--lr must be > 0, got {v['lr']}")
    need(v["momentum"] < 1, f"--momentum must be in [0, 1), got {v['momentum']}")
    need(v["val_split"] < 1, f"--val-split must be in [0, 1), got {v['val_split']}")
    need(v["label_smoothing"] < 1, f"--label-smoothing must be in [0, 1), got {v['label_smoothing']}")
    need(v["ema"] < 1, f"--ema must be in [0, 1) (a decay per step, e.g. 0.999), got {v['ema']}")
    need(not v["label_smoothing"] or (v["criterion"] or p.criteria[0]) == "cross-entropy",
         f"--label-smoothing applies to the cross-entropy criterion, not {p.name}'s "
         f"{v['criterion'] or p.criteria[0]}")
    need(isinstance(v["cutout"], int) and not isinstance(v["cutout"], bool) and 0 <= v["cutout"] <= 28,
         f"--cutout must be an integer from 0 to 28 (pixels), got {v['cutout']!r}")
    need(v["warmup_epochs"] <= v["epochs"], f"--warmup-epochs {v['warmup_epochs']} is longer than the run "
                                            f"({v['epochs']} epochs)")
    need(isinstance(v["seed"], int) and not isinstance(v["seed"], bool) and v["seed"] >= 0,
         f"--seed must be an integer >= 0, got {v['seed']!r}")
    need(v["train_limit"] is None or (isinstance(v["train_limit"], int) and v["train_limit"] >= 1),
         f"--train-limit must be an integer >= 1, got {v['train_limit']!r}")
    need(v["dtype"] in ("float32", "float64"), f"--dtype must be float32 or float64, got {v['dtype']!r}")
    need(v["engine"] in ("numpy", "torch"), f"--engine must be numpy or torch, got {v['engine']!r}")
    need(isinstance(v["test_each_epoch"], bool), f"test_each_epoch must be true or false, got {v['test_each_epoch']!r}")
    need(v["optimizer"] in ("sgd", "adam", "adamw", "sdlm"), f"unknown --optimizer {v['optimizer']!r}")
    need(v["schedule"] in SCHEDULES, f"unknown --schedule {v['schedule']!r}; choose one of: {', '.join(SCHEDULES)}")
    need(v["augment"] in AUGMENTS, f"unknown --augment {v['augment']!r}; choose one of: {', '.join(AUGMENTS)}")
    need(v["optimizer"] == "sgd" or not (v["momentum"] or v["nesterov"]),
         f"--momentum/--nesterov apply to --optimizer sgd, not {v['optimizer']}")
    need(not v["nesterov"] or v["momentum"] > 0, "--nesterov needs --momentum > 0")
    need("dropout" in p.options or "dropout" not in given, f"--dropout applies to --preset modern, not {p.name}")
    need(p.widen is not None or v["widths"] is None, f"--widths applies to --preset modern, not {p.name}")
    need(v["dropout"] is None or (isinstance(v["dropout"], (int, float)) and 0 <= v["dropout"] < 1),
         f"--dropout must be in [0, 1), got {v['dropout']!r}")
    need("criterion" in p.options or "criterion" not in given,
         f"--criterion applies to --preset lecun1998, not {p.name}")
    need(v["criterion"] is None or v["criterion"] in p.criteria,
         f"preset {p.name!r} has no criterion {v['criterion']!r}; choose one of: {', '.join(p.criteria)}")
    need(v["optimizer"] != "sdlm" or "sdlm" in p.options,
         "--optimizer sdlm needs the second-order pass of --preset lecun1998")
    need(v["optimizer"] != "sdlm" or not v["weight_decay"], "--optimizer sdlm takes no --weight-decay")
    need(v["engine"] != "torch" or v["optimizer"] != "sdlm",
         "--engine torch has no SDLM optimizer; train lecun1998 with --engine numpy or --optimizer sgd")


def criterion_for(p: Preset, name: str | None, map_j: float, label_smoothing: float = 0.0):
    """The preset's criterion ``name`` (its first when None), with its settings bound: the MAP
    constant j, label smoothing (cross-entropy)."""
    name = name or p.criteria[0]
    if name not in p.criteria:
        raise Lenet5Error(f"preset {p.name!r} has no criterion {name!r}; choose one of: {', '.join(p.criteria)}")
    if label_smoothing and name != "cross-entropy":
        raise Lenet5Error(f"label smoothing applies to the cross-entropy criterion, not {p.name}'s {name}")
    return CRITERIA[name](map_j=map_j, label_smoothing=label_smoothing)
