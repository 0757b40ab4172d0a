"""ONNX export: a trained LeNet-5 as a self-contained ``.onnx`` file, built from the NumPy weights.

The graph takes what MNIST readers naturally have — ``input`` (N, 1, 28, 28) float32 pixels
in [0, 1] (pixel/255, white digit on black), N dynamic — and returns ``logits`` (N, 10), whose
argmax is the predicted digit. Anything a preset does beyond pixel/255 happens inside the graph:

- seed-tanh, seed-sigmoid: C1 (padding 2) - act - 2×2 average pool - C3 - act - pool - C5 - act -
  F6 - sigmoid - OUTPUT, with act = tanh or sigmoid.
- modern: the same layout with ReLU and 2×2 max pooling; each batch norm (inference mode, running
  statistics) is folded into the convolution before it, dropout is the identity at inference.
- lecun1998: the input coding x·1.275 − 0.1 (background −0.1, ink 1.175) and the padding to
  32×32 with −0.1; trainable subsampling as a depthwise 2×2 convolution; the partial C3 as its
  masked weights; squash A·tanh(S·a) as Mul-Tanh-Mul; OUTPUT = −Σ_j (x_j − c_kj)², minus the
  Euclidean distance to each fixed RBF centre.

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

if TYPE_CHECKING:  # pragma: no cover
    from .model import LeNet5

#: opset 17 with IR version 8 loads in every onnxruntime since 1.14 (early 2023)
DEFAULT_OPSET = 17
#: the oldest opset with every operator used here in its current form (Unsqueeze/ReduceSum axes as inputs)
MIN_OPSET = 13
#: PyTorch's BatchNorm2d default, also the NumPy engine's; used when the model does not say
BN_EPS = 1e-5
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


#: a graph builder: (graph, input name, state dict, model) -> output name
Builder = Callable[[_Graph, str, dict[str, np.ndarray], "LeNet5"], str]


# --------------------------------------------------------------------------- weights
def _weight(state: dict[str, np.ndarray], key: str) -> np.ndarray:
    """state[key] as float64 (every computation on weights is done in float64, stored in float32)."""
    if key not in state:
        raise Lenet5Error(f"cannot export: the model's state has no {key!r}")
    return np.asarray(state[key], dtype=np.float64)


def _layer(state: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of layer ``name``."""
    return _weight(state, f"{name}.weight"), _weight(state, f"{name}.bias")


def fold_batch_norm(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                    mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """A convolution followed by inference-mode batch norm, as one convolution.

    BN(conv(x)) = γ·(W⋆x + b − μ)/√(σ²+ε) + β, so with s = γ/√(σ²+ε) per output channel:
        w' = w·s,   b' = (b − μ)·s + β.
    """
    s = gamma / np.sqrt(var + eps)
    return weight * s[:, None, None, None], (bias - mean) * s + beta


def _bn_eps(model: "LeNet5", name: str) -> float:
    """ε of batch-norm layer ``name``: the layer's own when the model exposes it, else 1e-5."""
    try:
        return float(model.layer(name).eps)  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError, ValueError):
        return BN_EPS


# --------------------------------------------------------------------------- one builder per layout
def _classic_graph(g: _Graph, x: str, layers: dict[str, tuple[np.ndarray, np.ndarray]], act: str, f6_act: str,
                   pool: str) -> str:
    """C1 (pad 2) - act - S2 pool - C3 - act - S4 pool - C5 - act - F6 - f6_act - OUTPUT:
    the layout of seed-tanh, seed-sigmoid and (batch norm folded into C1, C3) modern."""
    x = g.pool(g.activation(g.conv(x, "c1", *layers["c1"], pad=2), "c1_act", act), "s2", pool)
    x = g.pool(g.activation(g.conv(x, "c3", *layers["c3"]), "c3_act", act), "s4", pool)
    x = g.flatten(g.activation(g.conv(x, "c5", *layers["c5"]), "c5_act", act))
    x = g.activation(g.linear(x, "f6", *layers["f6"]), "f6_act", f6_act)
    return g.linear(x, "output", *layers["output"], output=OUTPUT)


def _seed_graph(act: str) -> Builder:
    def build(g: _Graph, x: str, state: dict[str, np.ndarray], model: "LeNet5") -> str:
        layers = {name: _layer(state, name) for name in ("c1", "c3", "c5", "f6", "output")}
        return _classic_graph(g, x, layers, act=act, f6_act="sigmoid", pool="avg")
    return build


def _modern_graph(g: _Graph, x: str, state: dict[str, np.ndarray], model: "LeNet5") -> str:
    """modern: C1 and C3 carry their batch norms (folded); dropout disappears at inference."""
    layers = {name: _layer(state, name) for name in ("c1", "c3", "c5", "f6", "output")}
    for conv in ("c1", "c3"):
        bn = f"{conv}_bn"
        gamma, beta = _layer(state, bn)
        layers[conv] = fold_batch_norm(*layers[conv], gamma, beta, _weight(state, f"{bn}.running_mean"),
                                       _weight(state, f"{bn}.running_var"), _bn_eps(model, bn))
    return _classic_graph(g, x, layers, act="relu", f6_act="relu", pool="max")


def _subsample(g: _Graph, x: str, name: str, coef: np.ndarray, bias: np.ndarray) -> str:
    """Trainable subsampling a_c = coef_c·Σ(2×2 block of map c) + bias_c: a depthwise 2×2
    convolution, stride 2, whose kernel for map c is four copies of coef_c."""
    kernel = np.broadcast_to(coef[:, None, None, None], (len(coef), 1, 2, 2))
    return g.conv(x, name, kernel, bias, stride=2, group=len(coef))


def _rbf(g: _Graph, x: str, centres: np.ndarray) -> str:
    """−y_k = −Σ_j (x_j − c_kj)² for x (N, F), centres (K, F) -> (N, K), computed directly (no
    expansion into |x|² − 2x·c + |c|², which loses digits to cancellation)."""
    diff = g.op("Sub", [g.op("Unsqueeze", [x, g.const("axis_1", [1])], "rbf_x"),
                        g.const("output.centres", centres)], "rbf_diff")  # (N, K, F)
    squares = g.op("Mul", [diff, diff], "rbf_squares")
    dist = g.op("ReduceSum", [squares, g.const("axis_2", [2])], "rbf_distance", keepdims=0)
    return g.op("Neg", [dist], "output", output=OUTPUT)


def _lecun1998_graph(g: _Graph, x: str, state: dict[str, np.ndarray], model: "LeNet5") -> str:
    """lecun1998: input coding and 32×32 padding, then C1-S2-C3-S4-C5-F6, squashed, RBF OUTPUT."""
    # pixel/255 -> the paper's coding (background −0.1, ink 1.175), 28×28 -> 32×32 with background
    x = g.op("Add", [g.op("Mul", [x, g.const("input_scale", 1.275)], "input_scaled"), g.const("input_shift", -0.1)],
             "input_coded")
    x = g.op("Pad", [x, g.const("input_pads", [0, 0, 2, 2, 0, 0, 2, 2]), g.const("background", -0.1)], "input_32x32",
             mode="constant")
    c3_weight, c3_bias = _layer(state, "c3")
    c3_weight = c3_weight * lecun1998.C3_TABLE.T[:, :, None, None]  # unconnected kernels are zero
    centres = np.asarray(state["output.centres"]) if "output.centres" in state else lecun1998.rbf_centres()

    x = g.activation(g.conv(x, "c1", *_layer(state, "c1")), "c1_act", "squash")
    x = g.activation(_subsample(g, x, "s2", *_layer(state, "s2")), "s2_act", "squash")
    x = g.activation(g.conv(x, "c3", c3_weight, c3_bias), "c3_act", "squash")
    x = g.activation(_subsample(g, x, "s4", *_layer(state, "s4")), "s4_act", "squash")
    x = g.flatten(g.activation(g.conv(x, "c5", *_layer(state, "c5")), "c5_act", "squash"))
    x = g.activation(g.linear(x, "f6", *_layer(state, "f6")), "f6_act", "squash")
    return _rbf(g, x, centres)


LOGITS = "logits: softmax gives the class probabilities, argmax the predicted class"
NEG_DISTANCES = ("negative RBF distances: minus the squared Euclidean distance from F6's output to each of the "
                 "10 fixed RBF centres; argmax (the nearest centre) is the predicted class")

#: preset -> (graph builder, meaning of the output)
_LAYOUTS: dict[str, tuple[Builder, str]] = {
    "seed-tanh": (_seed_graph("tanh"), LOGITS),
    "seed-sigmoid": (_seed_graph("sigmoid"), LOGITS),
    "modern": (_modern_graph, LOGITS),
    "lecun1998": (_lecun1998_graph, NEG_DISTANCES),
}

#: what model.prepare must compute from uint8 pixels, for the graph's input coding to be right
_EXPECTED_CODING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lecun1998": lambda p: np.pad(p * 1.275 - 0.1, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-0.1),
}


def _check_input_coding(model: "LeNet5") -> None:
    """Guard against drift: the graph's built-in coding must equal ``model.prepare`` on every
    pixel value 0..255 (the graph receives pixel/255)."""
    images = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(1, 28, 28)
    pixels = images[:, None].astype(np.float64) / 255
    expected = _EXPECTED_CODING.get(model.preset.name, lambda p: p)(pixels)
    got = np.asarray(model.prepare(images), dtype=np.float64)
    if got.shape != expected.shape or np.abs(got - expected).max() > 1e-6:
        raise Lenet5Error(f"cannot export preset {model.preset.name!r}: its input preparation no longer matches "
                          "the coding built into the ONNX graph")


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
    if preset not in _LAYOUTS:
        raise Lenet5Error(f"cannot export preset {preset!r} to ONNX; supported: {', '.join(_LAYOUTS)}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise Lenet5Error(f"opset {opset} is not supported: choose {MIN_OPSET} to {newest} (default {DEFAULT_OPSET})")
    _check_input_coding(model)
    build, meaning = _LAYOUTS[preset]
    helper, TensorProto = onnx.helper, onnx.TensorProto

    g = _Graph(onnx)
    output = build(g, INPUT, model.state_dict(), model)
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
    """Write via a temporary file and os.replace: an existing file is replaced whole or not at all."""
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    except OSError as e:
        raise Lenet5Error(f"{path}: cannot write ({e.strerror or e})") from None


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
