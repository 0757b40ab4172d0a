"""ONNX export: a trained LeNet-5 as a self-contained ``.onnx`` file, built from its layer list.

The graph takes what MNIST readers naturally have — ``input`` (N, 1, 28, 28) float32 pixels
in [0, 1] (pixel/255, white digit on black), N dynamic — and returns ``logits`` (N, 10), whose
argmax is the predicted digit. The preset's input coding (``Preset.coding``: scale, shift and
padding; the identity except for lecun1998's −0.1/1.175 on 32×32) is the graph's first nodes,
then each layer of the model's list becomes its ONNX nodes, by kind, once (``NODES``):

- Conv2d -> Conv (a partial connection table as its masked weights); Linear -> Gemm;
- BatchNorm2d -> BatchNormalization (inference: running statistics); Dropout -> nothing;
- Tanh, Sigmoid, ReLU -> Tanh, Sigmoid, Relu; LeNet-5's squash A·tanh(S·a) -> Mul-Tanh-Mul;
- AvgPool2d, MaxPool2d -> AveragePool, MaxPool (2×2, stride 2); Flatten -> Flatten;
- trainable subsampling -> a depthwise 2×2 convolution, stride 2, kernel = four copies of the
  coefficient; the RBF output -> −Σ_j (x_j − c_kj)², summed directly as the engines do.

The ``onnx`` package builds the graph (``helper.make_node`` ...); no PyTorch is involved.
``onnx`` is optional: without it, ``export_onnx`` raises a one-line Lenet5Error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import lecun1998
from .checkpoint import atomic_write
from .errors import Lenet5Error
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .presets import InputCoding

if TYPE_CHECKING:  # pragma: no cover
    from .model import LeNet5

#: opset 17 with IR version 8 loads in every onnxruntime since 1.14 (early 2023)
DEFAULT_OPSET = 17
#: the oldest opset with every operator used here in its current form (Unsqueeze/ReduceSum axes as inputs)
MIN_OPSET = 13
INPUT, OUTPUT = "input", "logits"
CLASS_NAMES = [str(d) for d in range(10)]
PREPROCESSING = ("28x28 grey, float32 in [0,1], white digit on black, MNIST-style centred; pixel/255. "
                 "Shape (N, 1, 28, 28), N any batch size.")
SAMPLE_IMAGES = Path(__file__).parent / "sample" / "t10k-images-idx3-ubyte.gz"
IDX_IMAGES = 2051  # magic number of an IDX file of uint8 images


# --------------------------------------------------------------------------- graph construction
class _Graph:
    """Collects ONNX nodes and initializers. Each op method adds one node and returns the name
    of its output, so a network reads as a chain of calls:
    ``x = g.activation(g.conv(x, "c1", w, b), "c1_act", "relu")``."""

    def __init__(self, onnx: Any, reserved: tuple[str, ...] = (INPUT,)) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set(reserved)
        self._shared: dict[str, str] = {}

    def _fresh(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def const(self, name: str, value: np.ndarray | float | list[int]) -> str:
        """A constant tensor (weights, scalars): float arrays stored as float32, ints as int64."""
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iub" else np.float32)
        name = self._fresh(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def shared(self, name: str, value: float) -> str:
        """A named scalar constant, stored once however often it is used (the squash's A and S)."""
        if name not in self._shared:
            self._shared[name] = self.const(name, value)
        return self._shared[name]

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any) -> str:
        """One node ``op_type(inputs)`` named ``name``; its output is called ``output`` (default: ``name``)."""
        out = self._fresh(output or name)
        node_name = out if output is None else self._fresh(name)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out

    # -- layers --------------------------------------------------------------------------
    def conv(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray, pad: int = 0,
             stride: int = 1, group: int = 1) -> str:
        """y = W ⋆ x + b, weight (C_out, C_in/group, k, k)."""
        k = weight.shape[-1]
        return self.op("Conv", [x, self.const(f"{name}.weight", weight), self.const(f"{name}.bias", bias)], name,
                       kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride], group=group)

    def linear(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray, output: str | None = None) -> str:
        """y = x·Wᵀ + b for x (N, in), weight (out, in): Gemm with transB."""
        return self.op("Gemm", [x, self.const(f"{name}.weight", weight), self.const(f"{name}.bias", bias)], name,
                       output, transB=1)

    def pool(self, x: str, name: str, kind: str) -> str:
        """2×2 pooling with stride 2: kind 'avg' or 'max'."""
        op_type = {"avg": "AveragePool", "max": "MaxPool"}[kind]
        return self.op(op_type, [x], name, kernel_shape=[2, 2], strides=[2, 2])

    def activation(self, x: str, name: str, kind: str) -> str:
        """tanh, sigmoid, relu, or LeNet-5's squash A·tanh(S·x)."""
        if kind == "squash":
            t = self.op("Tanh", [self.op("Mul", [x, self.shared("squash.S", lecun1998.S)], f"{name}_scale")],
                        f"{name}_tanh")
            return self.op("Mul", [t, self.shared("squash.A", lecun1998.A)], name)
        op_type = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}[kind]
        return self.op(op_type, [x], name)

    def flatten(self, x: str) -> str:
        """(N, C, H, W) -> (N, C·H·W), in (c, h, w) order like torch.flatten(x, 1)."""
        return self.op("Flatten", [x], "flatten", axis=1)


# --------------------------------------------------------------------------- layer kind -> nodes
def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _conv_nodes(g: _Graph, x: str, name: str, layer: Conv2d) -> str:
    weight = _f64(layer.params["weight"])
    if layer.mask is not None:  # unconnected kernels are exactly zero
        weight = weight * layer.mask
    return g.conv(x, name, weight, _f64(layer.params["bias"]), pad=layer.pad)


def _batch_norm_nodes(g: _Graph, x: str, name: str, layer: BatchNorm2d) -> str:
    p, b = layer.params, layer.buffers
    inputs = [x] + [g.const(f"{name}.{key}", _f64(v)) for key, v in
                    (("weight", p["weight"]), ("bias", p["bias"]), ("running_mean", b["running_mean"]),
                     ("running_var", b["running_var"]))]
    return g.op("BatchNormalization", inputs, name, epsilon=float(layer.eps))


def _subsample_nodes(g: _Graph, x: str, name: str, layer: lecun1998.Subsample2d) -> str:
    """a_c = coef_c·Σ(2×2 block of map c) + bias_c: a depthwise 2×2 convolution, stride 2,
    whose kernel for map c is four copies of coef_c."""
    coef = _f64(layer.params["weight"])
    kernel = np.broadcast_to(coef[:, None, None, None], (len(coef), 1, 2, 2))
    return g.conv(x, name, kernel, _f64(layer.params["bias"]), stride=2, group=len(coef))


def _rbf_nodes(g: _Graph, x: str, name: str, layer: lecun1998.RBF) -> str:
    """−y_k = −Σ_j (x_j − c_kj)² for x (N, F), centres (K, F) -> (N, K)."""
    diff = g.op("Sub", [g.op("Unsqueeze", [x, g.const("axis_1", [1])], f"{name}_x"),
                        g.const(f"{name}.centres", _f64(layer.buffers["centres"]))], f"{name}_diff")  # (N, K, F)
    squares = g.op("Mul", [diff, diff], f"{name}_squares")
    dist = g.op("ReduceSum", [squares, g.const("axis_2", [2])], f"{name}_distance", keepdims=0)
    return g.op("Neg", [dist], name)


#: every layer kind of ``lenet5.layers`` and ``lenet5.lecun1998``, and its ONNX nodes:
#: (graph, input name, layer name, layer) -> output name
NODES: dict[type, Callable[[_Graph, str, str, Any], str]] = {
    Conv2d: _conv_nodes,
    Linear: lambda g, x, name, layer: g.linear(x, name, _f64(layer.params["weight"]), _f64(layer.params["bias"])),
    BatchNorm2d: _batch_norm_nodes,
    Dropout: lambda g, x, name, layer: x,  # the identity at inference
    Tanh: lambda g, x, name, layer: g.activation(x, name, "tanh"),
    Sigmoid: lambda g, x, name, layer: g.activation(x, name, "sigmoid"),
    ReLU: lambda g, x, name, layer: g.activation(x, name, "relu"),
    lecun1998.Squash: lambda g, x, name, layer: g.activation(x, name, "squash"),
    AvgPool2d: lambda g, x, name, layer: g.pool(x, name, "avg"),
    MaxPool2d: lambda g, x, name, layer: g.pool(x, name, "max"),
    Flatten: lambda g, x, name, layer: g.flatten(x),
    lecun1998.Subsample2d: _subsample_nodes,
    lecun1998.RBF: _rbf_nodes,
}


def _coding_nodes(g: _Graph, x: str, coding: InputCoding) -> str:
    """pixel/255 -> the preset's input: ·scale + shift, padded with the background ``shift``."""
    if coding.scale != 1:
        x = g.op("Mul", [x, g.const("input_scale", coding.scale)], "input_scaled")
    if coding.shift:
        x = g.op("Add", [x, g.const("input_shift", coding.shift)], "input_coded")
    if coding.pad:
        x = g.op("Pad", [x, g.const("input_pads", [0, 0, coding.pad, coding.pad] * 2),
                         g.const("background", coding.shift)], f"input_{coding.size}x{coding.size}", mode="constant")
    return x


def _network_nodes(g: _Graph, model: "LeNet5") -> str:
    """The input coding, then every layer of the model, in order; the last output is renamed
    ``logits``."""
    x = _coding_nodes(g, INPUT, model.preset.coding)
    for name, layer in model.layers:
        if type(layer) not in NODES:
            raise Lenet5Error(f"cannot export layer {name} ({layer!r}) to ONNX")
        x = NODES[type(layer)](g, x, name, layer)
    return g.op("Identity", [x], "output", output=OUTPUT)


LOGITS = "logits: softmax gives the class probabilities, argmax the predicted class"
NEG_DISTANCES = ("negative RBF distances: minus the squared Euclidean distance from F6's output to each of the "
                 "10 fixed RBF centres; argmax (the nearest centre) is the predicted class")
#: what the graph's output means, by ``Preset.output``
MEANING = {"logits": LOGITS, "rbf": NEG_DISTANCES}


# --------------------------------------------------------------------------- the model proto
def _require_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise Lenet5Error("ONNX export needs the onnx package: pip install 'lenet5[onnx]'") from None
    return onnx


def build_onnx_model(model: "LeNet5", opset: int = DEFAULT_OPSET) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (checked with the ONNX checker), without writing it."""
    onnx = _require_onnx()
    preset = model.preset.name
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise Lenet5Error(f"opset {opset} is not supported: choose {MIN_OPSET} to {newest} (default {DEFAULT_OPSET})")
    meaning = MEANING[model.preset.output]
    helper, TensorProto = onnx.helper, onnx.TensorProto

    g = _Graph(onnx)
    output = _network_nodes(g, model)
    graph = helper.make_graph(
        g.nodes, f"lenet5-{preset}",
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 28, 28],
                                              doc_string=PREPROCESSING)],
        outputs=[helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 10], doc_string=meaning)],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="lenet5",
                              producer_version=_version(),
                              doc_string=f"LeNet-5 ({preset}) exported from the lenet5 NumPy engine")
    proto.ir_version = helper.find_min_ir_version_for(opsets)  # the oldest IR that runs it: widest support
    helper.set_model_props(proto, {
        "preset": preset,
        "class_names": json.dumps(CLASS_NAMES),
        "output": meaning,
        "preprocessing": PREPROCESSING,
        "lenet5_version": _version(),
    })
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:  # a bug here, never the user's input
        raise RuntimeError(f"the exported ONNX graph is invalid: {e}") from e
    return proto


def _version() -> str:
    from . import __version__
    return __version__


# --------------------------------------------------------------------------- files
def _check_file_path(path: Path, what: str) -> None:
    """A path we may write a file to: its directory exists, and it is not a directory itself."""
    if path.is_dir():
        raise Lenet5Error(f"{path}: is a directory, expected a {what} file path")
    if not path.parent.is_dir():
        why = "is not a directory" if path.parent.exists() else "does not exist"
        raise Lenet5Error(f"{path}: cannot write the {what} file: directory {path.parent} {why}")


def _check_dir_path(path: Path) -> None:
    """A directory we may create or fill: it is one already, or its parent is."""
    if path.exists() and not path.is_dir():
        raise Lenet5Error(f"{path}: exists and is not a directory (expected a test-data directory)")
    if not path.exists() and not path.parent.is_dir():
        raise Lenet5Error(f"{path}: cannot create the test-data directory: {path.parent} does not exist")


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as e:
        raise Lenet5Error(f"{path}: cannot create the directory ({e.strerror or e})") from None


def _write(path: Path, data: bytes) -> None:
    """Write via a temporary file and os.replace: an existing file is replaced whole or not at all
    (a failure is one line naming the file, from ``atomic_write``)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def sample_test_images() -> np.ndarray:
    """The official MNIST test images of the bundled sample (the first 2,000), uint8 (n, 28, 28)."""
    from .data import read_idx
    return read_idx(SAMPLE_IMAGES, IDX_IMAGES)


def _write_test_data(onnx: Any, model: "LeNet5", directory: Path, images: np.ndarray) -> None:
    """ONNX model zoo layout: test_data_set_<i>/input_0.pb (one image, pixel/255) and
    output_0.pb (the NumPy engine's output for it), TensorProtos named like the graph's I/O."""
    n_sets = len(images)
    outputs = np.asarray(model.infer(images), dtype=np.float32)
    inputs = images[:, None].astype(np.float32) / 255
    _mkdir(directory)
    for i in range(n_sets):
        folder = directory / f"test_data_set_{i}"
        _mkdir(folder)
        for file, name, arr in [("input_0.pb", INPUT, inputs[i:i + 1]), ("output_0.pb", OUTPUT, outputs[i:i + 1])]:
            _write(folder / file, onnx.numpy_helper.from_array(arr, name).SerializeToString())


def export_onnx(model: "LeNet5", path: str | Path, *, opset: int = DEFAULT_OPSET,
                test_data_dir: str | Path | None = None, n_test_sets: int = 3) -> Path:
    """Write ``model`` as an ONNX file at ``path`` and return the path.

    Input ``input`` (N, 1, 28, 28) float32 pixels/255, output ``logits`` (N, 10). With
    ``test_data_dir``, also write ``n_test_sets`` model-zoo test sets there (official MNIST test
    images and the NumPy engine's outputs), e.g. for ``onnx_test_runner`` or a deployment check.
    Paths are checked before anything is written; every file is written atomically.
    """
    path = Path(path)
    _check_file_path(path, "ONNX")
    images = None
    if test_data_dir is not None:
        test_data_dir = Path(test_data_dir)
        _check_dir_path(test_data_dir)
        images = sample_test_images()
        if not 1 <= n_test_sets <= len(images):
            raise Lenet5Error(f"n_test_sets must be from 1 to {len(images)} (the bundled test images), "
                              f"got {n_test_sets}")
        images = images[:n_test_sets]
    onnx = _require_onnx()
    proto = build_onnx_model(model, opset)
    _write(path, proto.SerializeToString())
    if test_data_dir is not None:
        _write_test_data(onnx, model, test_data_dir, images)
    return path
