"""lenet5: LeNet-5 from scratch in NumPy, fast enough to really train.

Python API in a nutshell::

    from lenet5 import LeNet5, SGD, load_dir, fit, evaluate
    data = load_dir("data/mnist")
    model = LeNet5("seed-tanh", seed=0)
    opt = SGD(model.params(), model.grads(), lr=0.1, momentum=0.9)
    fit(model, opt, data, epochs=3, batch_size=64)
    print(evaluate(model, data.test)["accuracy"])
"""

from . import _cpu  # noqa: F401  (tunes malloc once; see _cpu.py)
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, Split, load_dir, read_idx
from .errors import CheckpointError, DataError, Lenet5Error
from .layers import AvgPool2d, Conv2d, Flatten, Layer, Linear, Sigmoid, Tanh, softmax_cross_entropy
from .model import PRESETS, LeNet5, get_preset
from .optim import SGD
from .train import evaluate, fit, train_epoch

__version__ = "0.1.0"

__all__ = [
    "AvgPool2d", "CheckpointError", "Conv2d", "DataError", "Dataset", "Flatten", "Layer", "LeNet5",
    "Lenet5Error", "Linear", "PRESETS", "SGD", "Sigmoid", "Split", "Tanh", "evaluate", "fit",
    "get_preset", "load_checkpoint", "load_dir", "read_idx", "save_checkpoint", "softmax_cross_entropy",
    "train_epoch",
]
