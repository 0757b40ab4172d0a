"""ONNX export: the exported graph, run by ONNX Runtime, must compute what the NumPy engine computes.

Every expected value here comes from the NumPy engine (``model.infer``) or from the official
MNIST files, never from the export code. The networks are briefly trained first (and, for
modern, given arbitrary batch-norm statistics), so that the outputs really depend on every
weight, the batch-norm fold is exercised, and the predicted classes vary from image to image.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402  (installed with onnxruntime wherever these tests run)
from onnx import numpy_helper  # noqa: E402

import lenet5  # noqa: E402
from lenet5 import LeNet5, read_idx  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from lenet5.lecun1998 import C3_TABLE  # noqa: E402
from lenet5.losses import Criterion  # noqa: E402
from lenet5.onnx_export import export_onnx  # noqa: E402

PRESETS = ["seed-tanh", "seed-sigmoid", "modern", "lecun1998"]
SAMPLE = Path(lenet5.__file__).parent / "sample"
TEST_IMAGES = read_idx(SAMPLE / "t10k-images-idx3-ubyte.gz", 2051)[:1000]
TRAIN_IMAGES = read_idx(SAMPLE / "train-images-idx3-ubyte.gz", 2051)
TRAIN_LABELS = read_idx(SAMPLE / "train-labels-idx1-ubyte.gz", 2049).astype(np.int64)
MAX_BYTES = 300_000

# Tolerances (ONNX Runtime vs the NumPy engine, both float32). Logits are O(1-10): 1e-4 absolute
# is ~100 float32 round-offs. lecun1998's outputs are minus squared distances of a few hundred:
# there 1e-4 absolute would ask for 1e-7 relative, below float32's resolution (6e-8 per operation,
# and the NumPy engine's |x|² − 2x·c + |c|² loses further digits to cancellation), so it gets
# 1e-4 relative (plus 1e-4 absolute for outputs near 0).
ATOL = 1e-4
RTOL = {"lecun1998": 1e-4}


def pixels(images: np.ndarray) -> np.ndarray:
    """The graph's input: uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), pixel/255."""
    return (images.astype(np.float32) / 255)[:, None]


def assert_close(preset: str, got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(got, expected, rtol=RTOL.get(preset, 0.0), atol=ATOL)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machines' cores are shared
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


# --------------------------------------------------------------------------- non-trivial networks
def sgd_steps(model: LeNet5, steps: int, lr: float, batch: int = 32) -> None:
    """A few plain SGD steps on the bundled training images (the NumPy engine's own backward)."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(len(TRAIN_IMAGES), batch, replace=False)
        _, dlogits = Criterion(model.preset.criteria[0]).loss(model.forward(model.prepare(TRAIN_IMAGES[idx])),
                                                               TRAIN_LABELS[idx])
        model.backward(dlogits)
        grads = model.grads()
        for name, p in model.params().items():
            p -= lr * grads[name]


def tanh_to_sigmoid(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """seed-tanh weights rewritten for seed-sigmoid so that both networks compute the same logits.

    Plain SGD barely moves a sigmoid network in a few steps (its predictions stay one class), so
    it gets a trained tanh network in disguise, using tanh(a) = 2σ(2a) − 1: each squashing layer
    doubles its pre-activation (C1: W, b ×2), and a layer reading h = 2s − 1 instead of h gets
    W' = 2W, b' = b − ΣW (C3, C5: also ×2 for the next tanh; F6 feeds the same sigmoid as before).
    """
    s = {k: v.astype(np.float64) for k, v in state.items()}
    out = dict(s)
    out["c1.weight"], out["c1.bias"] = 2 * s["c1.weight"], 2 * s["c1.bias"]
    for conv in ("c3", "c5"):
        w, b = s[f"{conv}.weight"], s[f"{conv}.bias"]
        out[f"{conv}.weight"], out[f"{conv}.bias"] = 4 * w, 2 * (b - w.sum(axis=(1, 2, 3)))
    out["f6.weight"], out["f6.bias"] = 2 * s["f6.weight"], s["f6.bias"] - s["f6.weight"].sum(axis=1)
    return {k: v.astype(state[k].dtype) for k, v in out.items()}


def nontrivial_model(preset: str) -> LeNet5:
    rng = np.random.default_rng(1)
    if preset == "seed-sigmoid":
        tanh = nontrivial_model("seed-tanh")
        model = LeNet5(preset, seed=0)
        model.load_state_dict(tanh_to_sigmoid(tanh.state_dict()))
        return model.eval()
    model = LeNet5(preset, seed=0)
    steps, lr = {"seed-tanh": (40, 0.1), "modern": (40, 0.05), "lecun1998": (80, 0.003)}[preset]
    sgd_steps(model, steps, lr)
    state = model.state_dict()
    if preset == "modern":  # running statistics from training, plus arbitrary γ, β and shifts
        for bn in ("c1_bn", "c3_bn"):
            n = len(state[f"{bn}.weight"])
            state[f"{bn}.weight"] *= rng.uniform(0.5, 1.5, n).astype(np.float32)
            state[f"{bn}.bias"] += rng.normal(0, 0.2, n).astype(np.float32)
            state[f"{bn}.running_mean"] += rng.normal(0, 0.2, n).astype(np.float32)
            state[f"{bn}.running_var"] *= rng.uniform(0.5, 2.0, n).astype(np.float32)
    if preset == "lecun1998":  # junk where C3 has no connection: the engine ignores it, so must the export
        mask = C3_TABLE.T[:, :, None, None]
        state["c3.weight"] += np.where(mask, 0, rng.normal(0, 1, state["c3.weight"].shape)).astype(np.float32)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """On busy shared cores, two OpenBLAS threads make these small steps ~10x slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[LeNet5, Path, np.ndarray]]:
    """preset -> (model, exported file, the NumPy engine's outputs on the 1,000 test images)."""
    out = tmp_path_factory.mktemp("onnx")
    result = {}
    for preset in PRESETS:
        model = nontrivial_model(preset)
        result[preset] = (model, export_onnx(model, out / f"{preset}.onnx"), model.infer(TEST_IMAGES))
    return result


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("preset", PRESETS)
def test_onnx_runtime_matches_numpy_engine(exported, preset):
    model, path, expected = exported[preset]
    got = run_onnx(path, pixels(TEST_IMAGES))
    assert got.shape == (1000, 10) and got.dtype == np.float32
    assert_close(preset, got, expected)

    predicted = expected.argmax(axis=1)
    assert len(np.unique(predicted)) >= 8, "the network is too trivial for the class check to mean anything"
    # the same class wherever the NumPy engine's top two are not a tie at round-off level
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 10 * (ATOL + RTOL.get(preset, 0) * np.abs(top2[:, 1]))
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(got.argmax(axis=1)[clear], predicted[clear])


def test_sigmoid_network_is_the_tanh_network(exported):
    """The seed-sigmoid test network is the trained seed-tanh one rewritten (so it predicts digits)."""
    np.testing.assert_allclose(exported["seed-sigmoid"][2], exported["seed-tanh"][2], atol=1e-4)


def test_batch_norm_statistics_matter(exported):
    """Guard for the fold test: with identity batch norm the modern network computes something else."""
    model, _, expected = exported["modern"]
    plain = LeNet5("modern", seed=0)
    state = model.state_dict()
    for bn in ("c1_bn", "c3_bn"):
        state[f"{bn}.weight"][:], state[f"{bn}.bias"][:] = 1, 0
        state[f"{bn}.running_mean"][:], state[f"{bn}.running_var"][:] = 0, 1
    plain.load_state_dict(state)
    assert np.abs(plain.infer(TEST_IMAGES[:100]) - expected[:100]).max() > 0.1


@pytest.mark.parametrize("preset", PRESETS)
def test_checker_size_and_dynamic_batch(exported, preset):
    model, path, expected = exported[preset]
    onnx.checker.check_model(str(path), full_check=True)
    assert path.stat().st_size < MAX_BYTES
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for n in (1, 7):
        assert_close(preset, run_onnx(path, pixels(TEST_IMAGES[10:10 + n])), expected[10:10 + n])


@pytest.mark.parametrize("preset", PRESETS)
def test_metadata(exported, preset):
    proto = onnx.load(str(exported[preset][1]))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["preset"] == preset
    assert json.loads(meta["class_names"]) == [str(d) for d in range(10)]
    assert ("distances" in meta["output"]) == (preset == "lecun1998")
    assert "pixel/255" in meta["preprocessing"] and "[0,1]" in meta["preprocessing"]
    assert meta["lenet5_version"] == lenet5.__version__
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.ir_version == 8


def test_float64_model_exports_as_float32(tmp_path):
    model = LeNet5("seed-tanh", seed=3, dtype=np.float64)
    sgd_steps(model, steps=5, lr=0.1)
    model.eval()
    path = export_onnx(model, tmp_path / "f64.onnx")
    assert_close("seed-tanh", run_onnx(path, pixels(TEST_IMAGES[:50])), model.infer(TEST_IMAGES[:50]))


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets(exported, tmp_path, opset):
    model, _, expected = exported["lecun1998"]  # the preset that uses the most operator kinds
    path = export_onnx(model, tmp_path / "m.onnx", opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    assert_close("lecun1998", run_onnx(path, pixels(TEST_IMAGES[:20])), expected[:20])


# --------------------------------------------------------------------------- test data sets
@pytest.mark.parametrize("preset", ["seed-tanh", "lecun1998"])
def test_test_data_sets_round_trip(exported, tmp_path, preset):
    model, _, expected = exported[preset]
    data = tmp_path / "test_data"
    path = export_onnx(model, tmp_path / "model.onnx", test_data_dir=data, n_test_sets=3)
    assert sorted(p.name for p in data.iterdir()) == [f"test_data_set_{i}" for i in range(3)]
    for i in range(3):
        inp, out = (onnx.load_tensor(str(data / f"test_data_set_{i}" / f"{kind}_0.pb")) for kind in ("input", "output"))
        assert (inp.name, out.name) == ("input", "logits")
        x, y = numpy_helper.to_array(inp), numpy_helper.to_array(out)
        np.testing.assert_array_equal(x, pixels(TEST_IMAGES[i:i + 1]))  # official test image i
        assert_close(preset, y, expected[i:i + 1])  # the NumPy engine's output
        assert_close(preset, run_onnx(path, x), y)


# --------------------------------------------------------------------------- errors
def test_bad_output_paths(tmp_path):
    model = LeNet5("seed-tanh", seed=0)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (tmp_path / "missing" / "m.onnx", {}),  # directory does not exist
        (tmp_path, {}),  # a directory where the file should go
        (a_file / "m.onnx", {}),  # a file where a directory should be
        (tmp_path / "m.onnx", {"test_data_dir": a_file}),  # a file where the test-data dir should go
        (tmp_path / "m.onnx", {"test_data_dir": tmp_path / "no" / "data"}),
    ]
    for path, kwargs in cases:
        with pytest.raises(Lenet5Error) as err:
            export_onnx(model, path, **kwargs)
        message = str(err.value)
        named = kwargs.get("test_data_dir", path)
        assert str(named) in message and "\n" not in message
    assert not (tmp_path / "m.onnx").exists()  # paths are checked before anything is written


def test_bad_arguments(tmp_path):
    model = LeNet5("seed-tanh", seed=0)
    with pytest.raises(Lenet5Error, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(Lenet5Error, match="n_test_sets"):
        export_onnx(model, tmp_path / "m.onnx", test_data_dir=tmp_path / "d", n_test_sets=0)


def test_onnx_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(Lenet5Error, match=r"pip install 'lenet5\[onnx\]'"):
        export_onnx(LeNet5("seed-tanh", seed=0), tmp_path / "m.onnx")


def test_existing_file_is_never_half_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous model")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(Lenet5Error, match="m.onnx"):
        export_onnx(LeNet5("seed-tanh", seed=0), path)
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind
