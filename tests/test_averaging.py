"""--ema: the moving average of the weights is the one defined, resumes exactly, and is what a
run evaluates and saves."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from lenet5 import LeNet5, evaluate, fit, load_checkpoint, load_dir, resolve
from lenet5.averaging import Averaged
from lenet5.errors import Lenet5Error
from lenet5.train import Hooks, Interrupted


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True)


def test_average_follows_its_definition_step_by_step(mini_dir):
    """θ̄_t = d_t·θ̄_{t-1} + (1 − d_t)·θ_t with d_t = min(decay, (1 + t)/(10 + t)), θ̄_0 = the
    initial weights: written out here in float64 from the weights seen after every step."""
    data = load_dir(mini_dir)
    model = LeNet5("modern", seed=1)  # batch norm: running statistics are averaged too
    expected = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    decay, t = 0.95, {"n": 0}

    def after_step(epoch, batch, loss):
        t["n"] += 1
        d = min(decay, (1 + t["n"]) / (10 + t["n"]))
        for k, v in model.state_dict().items():
            expected[k] = v.astype(np.float64) if v.dtype.kind == "i" else d * expected[k] + (1 - d) * v

    opt = model.make_optimizer(resolve("modern", ema=decay))
    assert isinstance(opt, Averaged)
    fit(model, data, optimizer=opt, epochs=1, batch_size=16, ema=decay, progress=False,
        hooks=Hooks(on_batch=after_step))
    assert t["n"] == 19
    for k, v in model.state_dict().items():  # fit leaves the average in the model
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(opt.average["c1.weight"], LeNet5("modern", seed=1).state_dict()["c1.weight"])


def test_figures_are_the_averages_and_the_live_ones_are_recorded_apart(mini_dir):
    data = load_dir(mini_dir)
    model = LeNet5("seed-tanh", seed=2)
    history = fit(model, data, epochs=2, batch_size=16, ema=0.9, progress=False)
    assert history[-1]["test_acc"] == evaluate(model, data.test)["accuracy"]  # the model holds the average
    assert "live_test_acc" in history[-1]
    plain = fit(LeNet5("seed-tanh", seed=2), data, epochs=2, batch_size=16, progress=False)
    assert "live_test_acc" not in plain[-1]
    assert plain[-1]["test_acc"] == history[-1]["live_test_acc"]  # averaging does not change the training


@pytest.mark.parametrize("stop_after", [5, 19, 30])  # mid-epoch 1, at its end, mid-epoch 2
def test_interrupted_and_resumed_average_equals_uninterrupted(mini_dir, stop_after):
    data = load_dir(mini_dir)
    kw = dict(epochs=2, batch_size=16, seed=3, ema=0.9, progress=False, momentum=0.9)
    ref = LeNet5(seed=3)
    fit(ref, data, **kw)

    model = LeNet5(seed=3)
    opt = model.make_optimizer(resolve("seed-tanh", **{k: v for k, v in kw.items() if k != "progress"}))
    steps = {"n": 0}

    def should_stop():
        steps["n"] += 1
        return steps["n"] == stop_after

    with pytest.raises(Interrupted) as stopped:
        fit(model, data, optimizer=opt, hooks=Hooks(should_stop=should_stop), **kw)
    # what a new process reads back: the live weights and the optimizer's state (average included)
    model2 = LeNet5(seed=None)
    model2.load_state_dict(model.state_dict())
    opt2 = model2.make_optimizer(resolve("seed-tanh", ema=0.9, momentum=0.9, batch_size=16, seed=3))
    opt2.load_state_dict(opt.state_dict())
    fit(model2, data, optimizer=opt2, state=stopped.value.state, **kw)
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[k], v, err_msg=k)


def test_damaged_average_is_refused_with_the_name_of_what_is_wrong():
    model = LeNet5(seed=0)
    opt = model.make_optimizer(resolve("seed-tanh", ema=0.99))
    state = opt.state_dict()
    for damage, words in [(lambda s: s.pop("ema.f6.bias"), "missing ema.f6.bias"),
                          (lambda s: s.update({"ema.c1.weight": np.zeros(3, np.float32)}), "ema.c1.weight has shape"),
                          (lambda s: s.pop("ema.steps"), "missing ema.steps")]:
        broken = dict(state)
        damage(broken)
        with pytest.raises(Lenet5Error, match=words):
            opt.load_state_dict(broken)


def test_cli_saves_the_average_and_keeps_the_live_weights_for_resume(tmp_path, mini_dir):
    out = tmp_path / "run"
    r = cli("train", "--no-plots", "--quiet", "--data-dir", mini_dir, "--epochs", 2, "--batch-size", 16, "--ema", 0.9,
            "--out", out)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    model, _ = load_checkpoint(out / "model.safetensors")
    assert evaluate(model, load_dir(mini_dir).test)["accuracy"] == record["test_acc"]
    live = {k.removeprefix("model."): v for k, v in load_file(str(out / "train_state.safetensors")).items()
            if k.startswith("model.")}
    saved = load_file(str(out / "model.safetensors"))
    assert not np.array_equal(live["c1.weight"], saved["c1.weight"])
    np.testing.assert_array_equal(load_file(str(out / "train_state.safetensors"))["optim.ema.c1.weight"],
                                  saved["c1.weight"])
    assert json.loads((out / "config.json").read_text())["settings"]["ema"] == 0.9


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan"])
def test_cli_refuses_an_ema_decay_outside_0_1(tmp_path, mini_dir, value):
    r = cli("train", "--data-dir", mini_dir, "--ema", value, "--out", tmp_path / "r")
    assert r.returncode == 2 and "--ema" in r.stderr and "Traceback" not in r.stderr
