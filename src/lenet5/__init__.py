"""lenet5: LeNet-5 from scratch in NumPy, fast enough to really train.

Python API in a nutshell::

    import lenet5
    data = lenet5.load_dataset("mnist")           # cache, system copy, download, or bundled sample
    model = lenet5.LeNet5("seed-tanh", seed=0)
    history = lenet5.fit(model, data)             # the preset's recipe, as `lenet5 train` uses it
    history = lenet5.fit(model, data, epochs=3)   # ... or with options changed
    print(lenet5.evaluate(model, data.test)["accuracy"])
    lenet5.save_checkpoint("model.safetensors", model)
"""

from . import _cpu  # noqa: F401  (tunes malloc once; see _cpu.py)
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, Split, load_dir, read_idx
from .datasets import load_dataset
from .errors import CheckpointError, DataError, Lenet5Error
from .layers import AvgPool2d, Conv2d, Flatten, Layer, Linear, Sigmoid, Tanh
from .losses import Criterion, softmax_cross_entropy
from .model import LeNet5
from .optim import SGD, Adam, AdamW
from .presets import PRESETS, ModelSpec, TrainConfig, get_preset, resolve
from .train import Hooks, evaluate, fit
from .zoo import pretrained

__version__ = "0.2.0"

__all__ = [
    "Adam", "AdamW", "AvgPool2d", "CheckpointError", "Conv2d", "Criterion", "DataError", "Dataset", "Flatten", "Hooks",
    "Layer", "LeNet5", "Lenet5Error", "Linear", "ModelSpec", "PRESETS", "SGD", "Sigmoid", "Split", "Tanh",
    "TrainConfig",
    "evaluate", "fit", "get_preset", "load_checkpoint", "load_dataset", "load_dir", "pretrained", "read_idx", "resolve",
    "save_checkpoint", "softmax_cross_entropy",
]
