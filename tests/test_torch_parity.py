"""The NumPy engine against the PyTorch replica: same weights, same batch, same numbers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lenet5  # noqa: E402
import lenet5.torch_replica as lt  # noqa: E402
from lenet5 import SGD, LeNet5, PRESETS, load_dir  # noqa: E402

PRESET_NAMES = sorted(PRESETS)


def pair(preset, dtype_np, dtype_t, seed=0, widths=None):
    """The same network in both engines; dropout off so both compute the same function."""
    model = LeNet5(preset, seed=seed, dtype=dtype_np, widths=widths)
    net = lt.build(preset, seed=seed, dtype=dtype_t, widths=widths)
    for _, layer in model.layers:
        if hasattr(layer, "p"):
            layer.p = 0.0
    if hasattr(net, "p_drop"):
        net.p_drop = 0.0
    return model, net


def rel(a, b):
    from conftest import rel_error

    return rel_error(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_forward_logits_agree(preset, mini_dir):
    images = load_dir(mini_dir).test.images[:32]
    for dn, dt, tol in [(np.float64, torch.float64, 1e-10), (np.float32, torch.float32, 1e-5)]:
        model, net = pair(preset, dn, dt)
        x = model.prepare(images)
        np.testing.assert_array_less(rel(model.forward(x), net(torch.from_numpy(x)).detach().numpy()), tol)
        model.eval()
        net.eval()  # batch norm on running statistics
        np.testing.assert_array_less(rel(model.forward(x), net(torch.from_numpy(x)).detach().numpy()), tol)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_gradients_agree_with_autograd(preset, mini_dir):
    data = load_dir(mini_dir)
    model, net = pair(preset, np.float64, torch.float64, seed=3)
    x, y = model.prepare(data.train.images[:16]), data.train.labels[:16]
    loss, d = model.loss(model.forward(x), y)
    model.backward(d)
    t_loss = lt.criterion(preset, net(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in net.named_parameters():
        assert rel(model.grads()[name], p.grad.numpy()) < 1e-8, name


def test_modern_with_other_widths_agrees_with_autograd(mini_dir):
    data = load_dir(mini_dir)
    model, net = pair("modern", np.float64, torch.float64, seed=3, widths=(10, 20, 30))
    assert net.c3.weight.shape == (20, 10, 5, 5) and net.f6.weight.shape == (84, 30)
    x, y = model.prepare(data.train.images[:16]), data.train.labels[:16]
    loss, d = model.loss(model.forward(x), y)
    model.backward(d)
    t_loss = lt.criterion("modern", net(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in net.named_parameters():
        assert rel(model.grads()[name], p.grad.numpy()) < 1e-8, name


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_sgd_step_and_short_run_track_torch(preset, mini_dir):
    """Same seed, same data order, float64: SGD with momentum and weight decay, 10 steps.

    lecun1998's criterion is a sum of squared distances (~200 at the start, not ~2.3): at the
    cross-entropy presets' rate its weights grow tenfold in ten steps into saturation, where
    round-off is amplified step after step, so it gets a rate scaled to its loss."""
    data = load_dir(mini_dir)
    model, net = pair(preset, np.float64, torch.float64, seed=1)
    lr = 5e-4 if preset == "lecun1998" else 0.05
    opt = SGD(model.params(), model.grads(), lr=lr, momentum=0.9, weight_decay=1e-3)
    t_opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
    order = np.random.default_rng(0).permutation(len(data.train))
    for step in range(10):
        idx = order[step * 24:(step + 1) * 24]
        x, y = model.prepare(data.train.images[idx]), data.train.labels[idx]
        loss, d = model.loss(model.forward(x), y)
        model.backward(d)
        opt.step()
        t_opt.zero_grad()
        t_loss = lt.criterion(preset, net(torch.from_numpy(x)), torch.from_numpy(y))
        t_loss.backward()
        t_opt.step()
        assert loss == pytest.approx(t_loss.item(), rel=1e-9), step
    for name, p in net.state_dict().items():  # parameters and batch-norm buffers
        assert rel(model.state_dict()[name], p.numpy()) < 1e-9, name


def test_weights_move_both_ways(tmp_path):
    from safetensors.torch import load_file, save_file

    from lenet5 import load_checkpoint, save_checkpoint

    model = LeNet5(seed=7)
    save_checkpoint(tmp_path / "np.safetensors", model)
    net = lt.build("seed-tanh", seed=None)
    net.load_state_dict(load_file(str(tmp_path / "np.safetensors")))
    x = np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), model.forward(x), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    other = lt.SeedLeNet5("tanh")  # torch's own init
    save_file(other.state_dict(), str(tmp_path / "t.safetensors"))
    back, _ = load_checkpoint(tmp_path / "t.safetensors", preset="seed-tanh")
    np.testing.assert_allclose(back.forward(x), other(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("levers", [{}, {"label_smoothing": 0.1, "cutout": 8, "augment": "affine", "ema": 0.9}])
def test_both_engines_through_the_same_training_loop(mini_dir, levers):
    """fit() with the NumPy model and with the torch adapter: same float64 loss curve and
    weights, also with label smoothing, cutout and the weight average (both engines get them
    from the same loop)."""
    from lenet5 import fit
    from lenet5.torch_replica import TorchModel, TorchOptimizer

    data = load_dir(mini_dir)
    config = lenet5.resolve("seed-tanh", dtype="float64", **levers)
    np_model, t_model = LeNet5.from_config(config), TorchModel.from_config(config)
    assert np_model.criterion.loss is not lenet5.losses.softmax_cross_entropy or not levers
    kw = dict(epochs=2, batch_size=32, seed=4, progress=False, schedule="cosine", lr=0.1, momentum=0.5)
    h_np = fit(np_model, data, config, **kw)  # each engine builds the optimizer the config names
    h_t = fit(t_model, data, config, **kw)
    assert isinstance(t_model.make_optimizer(lenet5.resolve("seed-tanh")), TorchOptimizer)
    for a, b in zip(h_np, h_t):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)
        assert a.get("live_test_acc") == b.get("live_test_acc")
    for name, p in t_model.state_dict().items():
        assert rel(np_model.params()[name], p) < 1e-9, name


def test_ddp_two_processes_equal_single_process_on_the_same_global_batches(tmp_path, mini_dir):
    """torchrun, 2 ranks, gloo on CPU: 4 steps of global batch 32 == one process on the same batches."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.numpy import load_file

    from lenet5.data import batches
    from lenet5.train import subset

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "lenet5.cli", "train", "--engine", "torch", "--data-dir", str(mini_dir), "--epochs", "1",
           "--batch-size", "32", "--train-limit", "128", "--lr", "0.05", "--momentum", "0.9",
           "--weight-decay", "1e-3", "--schedule", "constant", "--dtype", "float64", "--seed", "3",
           "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 processes" in r.stderr
    assert json.loads((out / "config.json").read_text())["settings"]["world_size"] == 2

    # the same run in one process: the loop's seeded permutation, cut into global batches of 32
    data = load_dir(mini_dir)
    train = subset(data.train, 128, np.random.default_rng(3))
    order = np.concatenate(list(batches(128, 32, np.random.default_rng(3))))
    net = lt.build("seed-tanh", seed=3, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    model = LeNet5("seed-tanh", seed=None, dtype=np.float64)
    for step in range(4):
        idx = order[step * 32:(step + 1) * 32]
        x = torch.from_numpy(model.prepare(train.images[idx]))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), torch.from_numpy(train.labels[idx])).backward()
        opt.step()
    saved = load_file(str(out / "model.safetensors"))
    for name, p in net.state_dict().items():
        assert rel(saved[name], p.numpy()) < 1e-10, name

    # every feature of the one training loop works under torchrun, --resume included
    resume = [*cmd[:cmd.index("train") + 1], "--resume", str(out), "--epochs", "2", "--quiet"]
    r = subprocess.run(resume, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def _views_of_one_vector(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of ``arrays`` stored as consecutive views of one vector (as LeNet5 stores them)."""
    flat = np.concatenate([a.reshape(-1) for a in arrays.values()])
    out, at = {}, 0
    for k, a in arrays.items():
        out[k] = flat[at:at + a.size].reshape(a.shape)
        at += a.size
    return out


@pytest.mark.parametrize("layout", ["separate arrays", "one vector"])
@pytest.mark.parametrize("name", ["sgd-nesterov", "adam", "adamw"])
def test_optimizers_match_torch_optim(name, layout):
    """Ten steps on the same quadratic-ish gradients: identical parameters (float64), whether
    the optimizer updates parameter by parameter or the whole vector at once, and when its
    state is saved after five steps and loaded into a new optimizer."""
    from lenet5.optim import make_optimizer

    rng = np.random.default_rng(0)
    p0 = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    params = {k: v.copy() for k, v in p0.items()}
    grads = {k: np.zeros_like(v) for k, v in p0.items()}
    if layout == "one vector":
        params, grads = _views_of_one_vector(params), _views_of_one_vector(grads)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    kind = name.split("-")[0]
    sgd_only = {"momentum": 0.9, "nesterov": True} if kind == "sgd" else {}
    opt_config = lenet5.resolve("seed-tanh", optimizer=kind, lr=0.01, weight_decay=0.05, **sgd_only)
    opt = make_optimizer(opt_config, params, grads)
    topt = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=0.05, nesterov=True),
            "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.05),
            "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.05)}[kind](list(tparams.values()))
    assert (opt._flat is not None) == (layout == "one vector")
    for step in range(10):
        for k in params:  # gradient of sum(sin(3p) + p^2), evaluated where each engine stands
            grads[k][...] = 3 * np.cos(3 * params[k]) + 2 * params[k]
            tparams[k].grad = 3 * torch.cos(3 * tparams[k].detach()) + 2 * tparams[k].detach()
        opt.step()
        topt.step()
        if step == 4:  # a resume: the state moves to a fresh optimizer over the same arrays
            saved = opt.state_dict()
            opt = make_optimizer(opt_config, params, grads)
            opt.load_state_dict(saved)
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_onecycle_schedule_matches_torch():
    from lenet5.schedules import make_schedule

    total = 137
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total, cycle_momentum=False)
    ours = make_schedule("onecycle", 0.1, total)
    for step in range(total):
        assert ours(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        sched.step()


def test_torch_engine_trains_lecun1998_with_its_own_criterion(mini_dir):
    """The adapter's loss is the preset's criterion (MAP for lecun1998), not cross-entropy."""
    from lenet5.torch_replica import TorchModel

    data = load_dir(mini_dir)
    np_model = LeNet5("lecun1998", seed=2, dtype=np.float64, map_j=0.5)
    t_model = TorchModel("lecun1998", seed=2, dtype=np.float64, map_j=0.5)
    x, y = np_model.prepare(data.test.images[:8]), data.test.labels[:8]
    loss_np, d_np = np_model.loss(np_model.forward(x), y)
    loss_t, d_t = t_model.loss(t_model.forward(x), y)
    assert loss_t == pytest.approx(loss_np, rel=1e-10)
    t_logits = t_model.net(torch.from_numpy(x))
    assert lt.criterion("lecun1998", t_logits, torch.from_numpy(y), "map", 0.5).item() == pytest.approx(loss_np)
