"""lenet5 bench runs and reports every installed peer (structure only: timings belong to the
benchmark), counts FLOPs as written out by hand, and its JAX peer computes what the NumPy
engine computes."""

import json
import sys

import numpy as np
import pytest

from lenet5 import bench, cli
from lenet5.flops import flops, layer_flops
from lenet5.model import LeNet5
from lenet5.optim import SGD
from lenet5.train import train_step

SMALL = ["--steps", "2", "--repeats", "1", "--infer-images", "500"]


@pytest.fixture(autouse=True)
def cheap_compile(monkeypatch):
    """torch.compile through AOTAutograd without inductor's C++ code generation: the same
    tracing, forward and backward graphs, in seconds instead of a minute (inductor itself runs
    in the benchmark; its failure path is tested below)."""
    monkeypatch.setattr(bench, "COMPILE_BACKEND", "aot_eager")


def _run_json(capsys, *argv):
    assert cli.main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_json_reports_every_installed_peer(capsys):
    installed, _ = bench.available_peers()
    report = _run_json(capsys, "--batch-sizes", "1,16", *SMALL)
    assert report["environment"]["numpy"] and report["environment"]["cores"] >= 1
    assert report["flops_per_image"] == {"train": flops("seed-tanh", 1, True), "infer": flops("seed-tanh", 1, False)}
    assert [r["batch_size"] for r in report["train"]] == [1, 16]
    blocks = [(r, "train", [p for p in bench.TRAIN_PEERS if p in installed]) for r in report["train"]]
    blocks.append((report["infer"], "infer", [p for p in bench.INFER_PEERS if p in installed]))
    for block, kind, peers in blocks:
        assert list(block["peers"]) == peers  # every installed peer, nothing else
        per_image = report["flops_per_image"][kind]
        for name, entry in block["peers"].items():
            assert entry["images_per_s"] > 0 and entry["repeats"] == 1, (name, entry)
            assert entry["min"] <= entry["images_per_s"] <= entry["max"]
            assert entry["gflop_per_s"] == pytest.approx(per_image * entry["images_per_s"] / 1e9)
            assert (entry["compile_s"] is not None and entry["compile_s"] > 0) == (name in bench.COMPILED)
        others = {n: e["images_per_s"] for n, e in block["peers"].items() if n != "numpy"}
        if others:
            assert block["fastest"] == max(others, key=others.get)
            assert block["numpy_time_over_fastest"] == pytest.approx(
                max(others.values()) / block["peers"]["numpy"]["images_per_s"])
        if "torch" in peers:
            assert block["numpy_time_over_torch"] > 0
    assert report["infer"]["chunk"] == 500 and report["infer"]["images"] == 500


def test_flops_of_seed_tanh_written_out_by_hand():
    c1 = 2 * 1 * 25 * 6 * 28 * 28  # C1: 1 -> 6 maps, 5x5, pad 2: 28x28 out
    c3 = 2 * 6 * 25 * 16 * 10 * 10  # C3: 6 -> 16 maps on S2's 14x14: 10x10 out
    c5 = 2 * 16 * 25 * 120 * 1 * 1  # C5: 16 -> 120 on S4's 5x5: 1x1 out
    f6 = 2 * 120 * 84
    out = 2 * 84 * 10
    forward = c1 + c3 + c5 + f6 + out
    assert forward == 833_040
    assert flops("seed-tanh", 1, training=False) == forward
    assert flops("seed-tanh", 64, training=False) == 64 * forward
    # training: forward + weight gradients (every layer) + input gradients (every layer but C1)
    assert flops("seed-tanh", 1, training=True) == forward + forward + (forward - c1)
    # lecun1998: C3 connects 60 of the 96 (input, output) map pairs; the RBF centres are fixed
    c3_partial = 2 * 60 * 25 * 10 * 10
    assert flops("lecun1998", 1, training=False) == c1 + c3_partial + c5 + f6 + out
    assert flops("lecun1998", 1, training=True) == 3 * (c1 + c3_partial + c5 + f6 + out) - c1 - out
    assert [r["layer"] for r in layer_flops("modern")] == ["c1", "c3", "c5", "f6", "output"]


@pytest.mark.parametrize("preset", ["seed-tanh", "seed-sigmoid", "modern", "lecun1998"])
def test_jax_peer_is_the_numpy_engines_computation(preset):
    """The JAX peer, assembled from the layer list kind by kind, computes what the NumPy engine
    does: inference outputs, and two SGD steps (loss, weights, batch-norm statistics), with
    dropout off so both see the same network."""
    jax = pytest.importorskip("jax")
    from lenet5.losses import Criterion
    from lenet5.presets import ModelSpec

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 16)
    spec = ModelSpec(preset, dropout=0.0 if preset == "modern" else None)
    model = LeNet5.from_spec(spec, seed=0)
    x = model.prepare(images)
    cpu = jax.devices("cpu")[0]
    params, buffers = (jax.device_put(t, cpu) for t in bench.jax_params(spec))
    assert set(params) == set(model.params())

    model.eval()
    logits = np.asarray(jax.jit(lambda p, b, x: bench.jax_forward(spec)(p, b, x)[0])(params, buffers,
                                                                                     jax.device_put(x, cpu)))
    np.testing.assert_allclose(logits, model.forward(x), rtol=1e-4, atol=1e-4)
    model.train()

    lr = 2e-4 if preset == "lecun1998" else 0.5  # large enough that a wrong gradient shows in the weights
    opt = SGD(model.params(), model.grads(), lr=lr, momentum=0.9)
    criterion = Criterion(model.preset.criteria[0])
    step = bench.jax_sgd_step(spec, lr=lr, momentum=0.9)
    velocity = jax.tree_util.tree_map(jax.numpy.zeros_like, params)
    start = {k: v.copy() for k, v in model.params().items()}
    for i in range(2):  # the second step goes through the momentum buffer
        loss_np, _ = train_step(model, criterion, opt, x, labels)
        params, velocity, buffers, loss = step(params, velocity, buffers, jax.device_put(x, cpu),
                                               jax.device_put(labels.astype(np.int32), cpu), jax.random.PRNGKey(i))
        assert float(loss) == pytest.approx(loss_np, rel=1e-5)
        for name, p in model.params().items():
            mine = np.asarray(params[name])
            np.testing.assert_allclose(mine, p, rtol=1e-4, atol=1e-5, err_msg=f"{name}, step {i + 1}")
            # the updates themselves agree (seed-sigmoid's C1 moves by only ~1e-4 at this lr)
            moved = np.abs(p - start[name]).max()
            if preset == "modern" and name in ("c1.bias", "c3.bias"):
                continue  # before batch norm: no gradient, nothing moves
            assert moved > 0 and np.abs((mine - start[name]) - (p - start[name])).max() <= 0.02 * moved + 1e-7, name
    for name, b in model.buffers().items():
        if b.dtype.kind == "f":
            np.testing.assert_allclose(np.asarray(buffers[name]), b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_missing_peers_give_a_note_not_a_traceback(capsys, monkeypatch):
    for module in ("torch", "jax", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    assert cli.main(["bench", "--batch-sizes", "8", *SMALL]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    for note in ("PyTorch is not installed", "JAX is not installed", "onnxruntime are not installed"):
        assert sum(note in line for line in captured.out.splitlines()) == 1, note
    header = [line for line in captured.out.splitlines() if line.lstrip().startswith("batch")][0]
    assert header.split() == ["batch", "numpy", "np/torch", "np/fastest"]

    report = _run_json(capsys, "--batch-sizes", "8", *SMALL)
    assert list(report["train"][0]["peers"]) == ["numpy"] and list(report["infer"]["peers"]) == ["numpy"]
    assert report["train"][0]["numpy_time_over_fastest"] is None and len(report["notes"]) == 3


def test_one_missing_peer_leaves_the_others(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    peers, notes = bench.available_peers()
    assert "jax" not in peers and "numpy" in peers
    assert [note for note in notes if "JAX" in note] == [
        "JAX is not installed: skipping the JAX jit peer (pip install 'jax[cpu]' to compare)."]


def test_failed_compile_and_unsupported_preset_are_reported_once(capsys, monkeypatch):
    pytest.importorskip("torch")

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no working C++ compiler found\n(a long log follows)")

    monkeypatch.setattr(bench, "COMPILE_BACKEND", broken_backend)
    assert cli.main(["bench", "--preset", "modern", "--batch-sizes", "4,8", *SMALL]) == 0
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("torch.compile: failed: ")]
    assert failed == ["torch.compile: failed: RuntimeError: no working C++ compiler found"]
    assert "Traceback" not in out
    rows = [line.split() for line in out.splitlines() if line.lstrip()[:2] in ("4 ", "8 ")]
    assert len(rows) == 2 and all("failed" in row for row in rows)
    assert not [line for line in out.splitlines() if line.startswith("jax: -")]  # every preset has a JAX peer


def test_bench_profile_lists_every_layer(capsys):
    assert cli.main(["bench", "--profile", "--steps", "2", "--batch-sizes", "8"]) == 0
    out = capsys.readouterr().out
    for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output", "loss", "optimizer"):
        assert f"\n{name} " in out


def test_bench_rejects_bad_batch_sizes(capsys):
    assert cli.main(["bench", "--batch-sizes", "64,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
