"""The NumPy engine against the PyTorch replica: same weights, same batch, same numbers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lenet5  # noqa: E402
import lenet5.torch_replica as lt  # noqa: E402
from lenet5 import SGD, LeNet5, PRESETS, load_dir  # noqa: E402
from lenet5.losses import Criterion, torch_loss  # noqa: E402
from lenet5.presets import ModelSpec  # noqa: E402

PRESET_NAMES = sorted(PRESETS)


def pair(preset, dtype_np, dtype_t, seed=0, widths=None):
    """The same network in both engines; dropout off so both compute the same function."""
    dropout = 0.0 if "dropout" in PRESETS[preset].options else None
    model = LeNet5(preset, seed=seed, dtype=dtype_np, widths=widths, dropout=dropout)
    net = lt.build(preset, seed=seed, dtype=dtype_t, widths=widths, dropout=dropout)
    return model, net


def numpy_loss(preset, outputs, labels):
    return Criterion(PRESETS[preset].criteria[0]).loss(outputs, labels)


def torch_criterion(preset, outputs, labels):
    return torch_loss(PRESETS[preset].criteria[0], outputs, labels, 0.1)


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
    loss, d = numpy_loss(preset, model.forward(x), y)
    model.backward(d)
    t_loss = torch_criterion(preset, net(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in net.named_parameters():
        assert rel(model.grads()[name], p.grad.numpy()) < 1e-8, name


def test_modern_with_other_widths_agrees_with_autograd(mini_dir):
    data = load_dir(mini_dir)
    model, net = pair("modern", np.float64, torch.float64, seed=3, widths=(10, 20, 30))
    assert net.c3.weight.shape == (20, 10, 5, 5) and net.f6.weight.shape == (84, 30)
    x, y = model.prepare(data.train.images[:16]), data.train.labels[:16]
    loss, d = numpy_loss("modern", model.forward(x), y)
    model.backward(d)
    t_loss = torch_criterion("modern", net(torch.from_numpy(x)), torch.from_numpy(y))
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
        loss, d = numpy_loss(preset, model.forward(x), y)
        model.backward(d)
        opt.step()
        t_opt.zero_grad()
        t_loss = torch_criterion(preset, net(torch.from_numpy(x)), torch.from_numpy(y))
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
    other = lt.replica(ModelSpec("seed-tanh"))  # torch's own init
    save_file(other.state_dict(), str(tmp_path / "t.safetensors"))
    back, _ = load_checkpoint(tmp_path / "t.safetensors", preset="seed-tanh")
    np.testing.assert_allclose(back.forward(x), other(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset,levers", [("seed-tanh", {}), ("seed-tanh", {"augment": "affine"}),
                                           ("lecun1998", {"optimizer": "sgd", "criterion": "mse", "batch_size": 8}),
                                           ("modern", {"dropout": 0.0, "widths": (4, 8, 16)})])
def test_both_engines_through_the_same_training_loop(mini_dir, preset, levers):
    """fit() with the NumPy model and with the torch engine: same float64 loss curve and
    weights; both get augmentation, criterion and network from the same recipe and loop."""
    from lenet5 import fit
    from lenet5.torch_replica import TorchModel, TorchOptimizer

    data = load_dir(mini_dir)
    lr = 1e-4 if preset == "lecun1998" else 0.1
    momentum = {"momentum": 0.5} if preset != "modern" else {}
    config = lenet5.resolve(preset, **{"dtype": "float64", "epochs": 2, "batch_size": 32, "seed": 4,
                                       "schedule": "cosine", "lr": lr, **momentum, **levers})
    np_model, t_model = LeNet5.from_config(config), TorchModel.from_config(config)
    h_np = fit(np_model, data, config, progress=False)  # each engine builds the optimizer the config names
    h_t = fit(t_model, data, config, progress=False)
    assert isinstance(t_model.make_optimizer(config), TorchOptimizer)
    for a, b in zip(h_np, h_t):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        # evaluation reads batch norm's running statistics, whose sums round differently
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-7)
        assert a["train_acc"] == b["train_acc"]
    for name, p in t_model.state_dict().items():
        if preset == "modern" and name in ("c1.bias", "c3.bias", "c1_bn.running_mean", "c3_bn.running_mean"):
            # a bias before batch norm has no gradient: it moves by round-off only, and the
            # running means carry that
            np.testing.assert_allclose(np_model.state_dict()[name], p, atol=1e-5)
        else:
            assert rel(np_model.state_dict()[name], p) < 1e-9, name


def test_a_torch_training_step_never_copies_to_the_host(mini_dir, monkeypatch):
    """The torch engine's outputs stay tensors and the step's criterion runs on them with torch:
    no .cpu(), .numpy(), .item() or .tolist() inside a step. The loop reads the losses back once
    every READ_EVERY steps (and at the end of a pass), so a whole epoch pays a handful of reads.
    (torch.optim's Adam reads its step counter with .item(): a tensor it keeps on the CPU on
    every device, so no transfer; those calls are not counted.)"""
    import sys

    from lenet5 import fit
    from lenet5.torch_replica import TorchModel
    from lenet5.train import READ_EVERY

    data = load_dir(mini_dir)
    config = lenet5.resolve("modern", epochs=1, batch_size=4, train_limit=200, test_each_epoch=False)
    data, _ = lenet5.train.prepare_data(data, config)
    model = TorchModel.from_config(config)
    calls = []
    for method in ("cpu", "numpy", "item", "tolist"):
        original = getattr(torch.Tensor, method)

        def trap(self, *a, _name=method, _original=original, **k):
            if not sys._getframe(1).f_globals.get("__name__", "").startswith("torch.optim"):
                calls.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, method, trap)
    steps = []
    hooks = lenet5.train.Hooks(on_batch=lambda epoch, batch, loss: steps.append(batch))
    fit(model, data, config, hooks=hooks, progress=False)
    monkeypatch.undo()
    assert len(steps) == 50  # every step's loss was reported
    reads = -(-50 // READ_EVERY)
    assert calls.count("tolist") == 2 * reads  # losses and counts of right answers, one read each
    assert {"cpu", "numpy", "item"}.isdisjoint(calls[:calls.index("tolist")])  # nothing before the first read


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


def test_torch_engine_evaluates_lecun1998s_criterion_on_its_tensors(mini_dir):
    """The step's criterion on the torch engine's outputs is the recipe's (MAP with j = 0.5 for
    lecun1998): same value and gradient as on the NumPy engine's outputs."""
    from lenet5.torch_replica import TorchModel

    data = load_dir(mini_dir)
    np_model = LeNet5("lecun1998", seed=2, dtype=np.float64)
    t_model = TorchModel("lecun1998", seed=2, dtype=np.float64)
    x, y = np_model.prepare(data.test.images[:8]), data.test.labels[:8]
    criterion = Criterion("map", 0.5)
    loss_np, d_np = criterion.loss(np_model.forward(x), y)
    loss_t, d_t = criterion.loss(t_model.forward(x), y)
    assert isinstance(loss_t, torch.Tensor)
    assert float(loss_t) == pytest.approx(loss_np, rel=1e-10)
    assert rel(d_np, d_t.numpy()) < 1e-10
    assert float(loss_t) != pytest.approx(Criterion("map", 0.1).loss(np_model.forward(x), y)[0], rel=1e-6)
