"""Checkpoints: round trips, metadata, the notebook .npz layout, and clear errors."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from lenet5 import CheckpointError, LeNet5, load_checkpoint, save_checkpoint
from lenet5.checkpoint import read_safetensors
from lenet5.losses import Criterion


def test_roundtrip_keeps_weights_preset_and_metadata(tmp_path):
    model = LeNet5("seed-sigmoid", seed=4)
    save_checkpoint(tmp_path / "m.safetensors", model, {"settings": {"lr": 0.1}, "epoch": 3})
    loaded, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.preset.name == "seed-sigmoid" and meta["settings"] == {"lr": 0.1} and meta["epoch"] == 3
    for k, v in model.params().items():
        np.testing.assert_array_equal(loaded.params()[k], v)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_bare_state_dict_loads_with_a_preset(tmp_path):
    state = LeNet5(seed=1).state_dict()
    save_file(state, str(tmp_path / "bare.safetensors"))
    loaded, _ = load_checkpoint(tmp_path / "bare.safetensors", preset="seed-tanh")
    np.testing.assert_array_equal(loaded.params()["c5.weight"], state["c5.weight"])


def test_float64_checkpoint_loads_into_float32_model(tmp_path):
    model = LeNet5(seed=1, dtype=np.float64)
    save_checkpoint(tmp_path / "m.safetensors", model)
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.params()["c1.weight"].dtype == np.float32


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.pop("f6.bias"), "missing \\['f6.bias'\\]"),
    (lambda s: s.update({"c3.weight": np.zeros((16, 6, 3, 3), np.float32)}), "c3.weight: expected shape"),
    (lambda s: s.update({"extra.weight": np.zeros(2, np.float32)}), "unexpected \\['extra.weight'\\]"),
    (lambda s: s["c1.weight"].fill(np.nan), "c1.weight contains NaN"),
])
def test_bad_state_gives_one_line_error(tmp_path, mutate, message):
    state = LeNet5(seed=0).state_dict()
    mutate(state)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"garbage that is not safetensors", b"\xff" * 8 + b"{}"])
def test_unreadable_files(tmp_path, content):
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_unknown_preset_in_metadata(tmp_path):
    save_file(LeNet5().state_dict(), str(tmp_path / "m.safetensors"), metadata={"preset": "resnet"})
    with pytest.raises(CheckpointError, match="unknown preset 'resnet'"):
        load_checkpoint(tmp_path / "m.safetensors")


def notebook_arrays(model: LeNet5, hwio: bool) -> dict:
    p = model.state_dict()
    k = (lambda w: w.transpose(2, 3, 1, 0)) if hwio else (lambda w: w)
    return {"c1_kernel": k(p["c1.weight"]), "c1_bias": p["c1.bias"], "c3_kernel": k(p["c3.weight"]),
            "c3_bias": p["c3.bias"], "c5_kernel": k(p["c5.weight"]), "c5_bias": p["c5.bias"],
            "f6_weights": p["f6.weight"], "f6_bias": p["f6.bias"], "out_weights": p["output.weight"],
            "out_bias": p["output.bias"]}


@pytest.mark.parametrize("hwio", [False, True])
def test_notebook_npz_layout(tmp_path, hwio):
    model = LeNet5(seed=9)
    np.savez(tmp_path / "nb.npz", **notebook_arrays(model, hwio))
    loaded, meta = load_checkpoint(tmp_path / "nb.npz")
    x = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(x), model.forward(x), rtol=1e-6)
    assert meta["preset"] == "seed-tanh"


def test_notebook_npz_with_pickled_objects_is_refused(tmp_path):
    arrays = notebook_arrays(LeNet5(seed=9), False)
    arrays["c1_bias"] = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "nb.npz", **arrays)
    with pytest.raises(CheckpointError, match="nb.npz"):
        load_checkpoint(tmp_path / "nb.npz")
    del arrays["c1_bias"]
    np.savez(tmp_path / "nb2.npz", **arrays)
    with pytest.raises(CheckpointError, match="missing keys c1_bias"):
        load_checkpoint(tmp_path / "nb2.npz")


def test_metadata_is_json(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", LeNet5(), {"data": {"train_size": 5}})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "lenet5" and json.loads(meta["data"]) == {"train_size": 5}


@pytest.mark.parametrize("preset", ["modern", "lecun1998"])
def test_roundtrip_of_every_preset_with_buffers(tmp_path, preset):
    model = LeNet5(preset, seed=3)
    x = model.prepare(np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8))
    _, d = Criterion(model.preset.criteria[0]).loss(model.forward(x), np.arange(4))  # moves batch-norm statistics
    model.backward(d)
    save_checkpoint(tmp_path / "m.safetensors", model)
    loaded, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta["preset"] == preset
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.shape == v.shape, k
        np.testing.assert_array_equal(got, v, err_msg=k)
    model.eval()
    loaded.eval()
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


# --------------------------------------------------------------------------- hostile checkpoints
def save_with(path, preset: str = "seed-tanh", metadata: dict | None = None, mutate=None) -> None:
    """A bare safetensors file with the preset's state dict and the given string metadata."""
    state = LeNet5(preset, seed=0).state_dict()
    if mutate is not None:
        mutate(state)
    save_file(state, str(path), metadata=metadata)


@pytest.mark.parametrize("preset,metadata,message", [
    ("seed-tanh", {"preset": '["seed-tanh"]'}, "metadata 'preset' must be a string, got ['seed-tanh']"),
    ("lecun1998", {"preset": "lecun1998", "settings": '{"widths": [8, 12, 40]}'},
     "the recorded network does not fit preset 'lecun1998': --widths applies to --preset modern"),
    ("modern", {"preset": "modern", "settings": '{"dropout": 5}'},
     "the recorded network does not fit preset 'modern': --dropout must be in [0, 1), got 5"),
    ("modern", {"model": '{"preset": "modern", "dropout": "high"}'}, "--dropout must be in [0, 1), got 'high'"),
    ("modern", {"model": '["modern"]'}, "metadata 'model' must be a JSON object, got a list"),
    ("modern", {"model": '{"preset": "modern", "colour": "red"}'}, "a model spec is an object with"),
    ("seed-tanh", {"settings": "[1, 2]"}, "metadata 'settings' must be a JSON object, got a list"),
])
def test_metadata_of_the_wrong_json_shape(tmp_path, preset, metadata, message):
    save_with(tmp_path / "m.safetensors", preset, metadata)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "m.safetensors")
    text = str(e.value)
    assert message in text and "m.safetensors" in text and "\n" not in text


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_weights_stored_as_integers_booleans_or_complex_are_refused(tmp_path, dtype):
    def to_dtype(state):
        state["c1.weight"] = np.ones(state["c1.weight"].shape, dtype=dtype)

    save_with(tmp_path / "m.safetensors", mutate=to_dtype)
    with pytest.raises(CheckpointError, match=f"c1.weight is stored as {np.dtype(dtype)}; expected floating-point"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_float16_weights_load(tmp_path):
    save_with(tmp_path / "m.safetensors", mutate=lambda s: s.update({k: v.astype(np.float16) for k, v in s.items()}))
    model, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert model.params()["c1.weight"].dtype == np.float32


def test_old_optimizer_tensors_are_ignored_but_other_extra_tensors_are_named(tmp_path):
    model = LeNet5(seed=2)
    save_checkpoint(tmp_path / "run.safetensors", model, extra={"optim.step": np.array(3),
                                                                "optim.momentum.c1.weight": np.ones((6, 1, 5, 5))})
    loaded, _ = load_checkpoint(tmp_path / "run.safetensors")
    np.testing.assert_array_equal(loaded.params()["c1.weight"], model.params()["c1.weight"])
    save_checkpoint(tmp_path / "ema.safetensors", model, extra={"ema.c1.weight": np.ones((6, 1, 5, 5)),
                                                                "optim.step": np.array(3)})
    with pytest.raises(CheckpointError, match=r"unexpected \['ema.c1.weight'\]") as e:
        load_checkpoint(tmp_path / "ema.safetensors")
    assert "optim.step" not in str(e.value)


def write_safetensors(path, header: dict, data: bytes = b"", raw_header: bytes | None = None) -> None:
    """A safetensors file written by hand, to state what the library would refuse to write."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("header,data,raw_header,message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside the 4-byte data"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "overlaps"),
    ({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, None, "unsupported dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "is not a list of sizes"),
    ({"__metadata__": {"preset": 3}}, b"", None, "__metadata__ is not an object of strings"),
    ({}, b"", b"[" * 100_000, "nested too deeply"),
    ({}, b"", b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    ({}, b"", b"\xff\xfe{}", "codec can't decode"),
])
def test_safetensors_headers_that_lie(tmp_path, header, data, raw_header, message):
    write_safetensors(tmp_path / "x.safetensors", header, data, raw_header)
    with pytest.raises(CheckpointError) as e:
        read_safetensors(tmp_path / "x.safetensors")
    assert message in str(e.value) and "not a readable safetensors checkpoint" in str(e.value)


def test_header_length_beyond_the_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header length 9,223,372,036,854,775,808 exceeds the file"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_checkpoints_written_by_pytorch_load_bfloat16_included(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    model = LeNet5(seed=5)
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    torch_save(state, str(tmp_path / "t.safetensors"), metadata={"preset": "seed-tanh"})
    loaded, _ = load_checkpoint(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(loaded.params()["f6.weight"], model.params()["f6.weight"])
    torch_save({k: v.to(torch.bfloat16) for k, v in state.items()}, str(tmp_path / "bf16.safetensors"))
    loaded, _ = load_checkpoint(tmp_path / "bf16.safetensors")
    expected = state["f6.weight"].to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(loaded.params()["f6.weight"], expected)


def test_widths_in_the_settings_rebuild_the_network_or_are_refused(tmp_path):
    model = LeNet5("modern", seed=0, widths=(8, 12, 40))
    save_checkpoint(tmp_path / "w.safetensors", model)  # the Python API records the widths itself
    loaded, _ = load_checkpoint(tmp_path / "w.safetensors")
    assert loaded.widths == (8, 12, 40)
    assert all(np.array_equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    from lenet5.checkpoint import save_tensors

    save_tensors(tmp_path / "bad.safetensors", model.state_dict(),
                 {"preset": "modern", "settings": json.dumps({"widths": [8, 12]})})
    with pytest.raises(CheckpointError, match="bad.safetensors: the recorded network does not fit preset 'modern': "
                                              "--widths must be three integers"):
        load_checkpoint(tmp_path / "bad.safetensors")
