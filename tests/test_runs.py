"""Long runs that lose nothing: exact resume, Ctrl-C, kill -9, divergence, validation split."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from lenet5 import SGD, LeNet5, cli, fit, load_dir
from lenet5.train import Hooks, Interrupted


def weights(path):
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("optim.")}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("stop_after", [3, 10, 20])  # mid-epoch 1, exactly at an epoch end, mid-epoch 3
def test_interrupted_and_resumed_fit_equals_uninterrupted(mini_dir, stop_after):
    data = load_dir(mini_dir)
    kw = dict(epochs=3, batch_size=32, seed=2, progress=False, schedule="cosine", lr=0.1, momentum=0.9)

    def fresh():
        m = LeNet5(seed=2)
        return m, SGD(m.params(), m.grads(), lr=0.1, momentum=0.9)

    ref, ref_opt = fresh()
    ref_hist = fit(ref, data, optimizer=ref_opt, **kw)

    model, opt = fresh()
    steps = {"n": 0}

    def should_stop():
        steps["n"] += 1
        return steps["n"] == stop_after

    saved = {}
    try:
        fit(model, data, optimizer=opt, **kw,
            hooks=Hooks(should_stop=should_stop, on_epoch=lambda rec, st: saved.update(state=st)))
        state = None
    except Interrupted as e:
        state = e.state
    assert state is not None
    # a new process would rebuild the model and optimizer from the checkpoint; do the same here
    model2, opt2 = fresh()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())
    hist = fit(model2, data, optimizer=opt2, **kw, state=state)
    for k, v in ref.params().items():
        np.testing.assert_array_equal(model2.params()[k], v, err_msg=k)
    assert [h["test_acc"] for h in hist] == [h["test_acc"] for h in ref_hist]


def run_cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "lenet5.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


TRAIN = ["train", "--no-plots", "--epochs", 3, "--batch-size", 16, "--momentum", 0.9, "--seed", 4, "--quiet"]


def wait_for(pred, timeout=60):
    end = time.time() + timeout
    while not pred() and time.time() < end:
        time.sleep(0.01)
    assert pred(), "timed out"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_stop_and_resume_gives_the_uninterrupted_weights(tmp_path, mini_dir, sig):
    ref = run_cli(*TRAIN, "--data-dir", mini_dir, "--out", tmp_path / "ref")
    assert ref.wait() == 0, ref.stderr.read()

    out = tmp_path / "run"
    p = run_cli(*TRAIN, "--data-dir", mini_dir, "--out", out)
    wait_for(lambda: (out / "model.safetensors").exists())  # after epoch 1 at the latest
    p.send_signal(sig)
    code = p.wait()
    err = p.stderr.read()
    if code == 0:  # it finished before the signal landed: nothing left to test on this machine
        pytest.skip("training finished before the signal arrived")
    if sig == signal.SIGINT:
        assert code == 130 and f"Resume with: lenet5 train --resume {out}" in err and "Traceback" not in err
    weights(out / "model.safetensors")  # loadable whatever moment the process died
    r = subprocess.run([sys.executable, "-m", "lenet5.cli", "train", "--no-plots", "--resume", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert_same_weights(weights(out / "model.safetensors"), weights(tmp_path / "ref" / "model.safetensors"))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]


def test_resume_errors(tmp_path, mini_dir, capsys):
    assert cli.main(["train", "--no-plots", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    out = tmp_path / "done"
    assert cli.main(["train", "--no-plots", "--data-dir", str(mini_dir), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert cli.main(["train", "--no-plots", "--resume", str(out)]) == 2
    assert "already finished 1 epochs; pass --epochs N" in capsys.readouterr().err
    assert cli.main(["train", "--no-plots", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, mini_dir, monkeypatch, capsys):
    from lenet5.losses import Criterion

    calls = []
    real = Criterion.loss

    def nan_in_epoch_two(self, logits, labels):
        calls.append(1)
        loss, d = real(self, logits, labels)
        return (float("inf") if len(calls) == 12 else loss), d  # 300/32 = 10 steps per epoch

    monkeypatch.setattr(Criterion, "loss", nan_in_epoch_two)
    out = tmp_path / "r"
    code = cli.main(["train", "--no-plots", "--data-dir", str(mini_dir), "--epochs", "3", "--batch-size", "32", "--out", str(out),
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "loss became inf at epoch 2, batch 1" in err and "smaller learning rate" in err
    assert f"last good checkpoint is {out / 'model.safetensors'}" in err
    from lenet5 import load_checkpoint

    _, meta = load_checkpoint(out / "model.safetensors")
    assert meta["epoch"] == 1


def test_val_split_keeps_the_best_validation_epoch(tmp_path, mini_dir):
    out = tmp_path / "v"
    assert cli.main(["train", "--no-plots", "--data-dir", str(mini_dir), "--epochs", "3", "--val-split", "0.2", "--out", str(out),
                     "--quiet"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc" in x for x in lines)
    best = max(lines, key=lambda x: x["val_acc"])  # first epoch reaching the maximum wins
    from lenet5 import load_checkpoint

    model, meta = load_checkpoint(out / "best.safetensors")
    assert meta["epoch"] == best["epoch"] and meta["val_acc"] == best["val_acc"]
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["train_size"] == 240 and config["data"]["val_size"] == 60


def test_modern_recipe_resumes_exactly_with_dropout_augmentation_and_adamw(mini_dir):
    from lenet5.optim import AdamW

    data = load_dir(mini_dir)
    kw = dict(epochs=2, batch_size=32, seed=5, progress=False, schedule="onecycle", augment="elastic", lr=0.003,
              weight_decay=0.05)

    def fresh():
        m = LeNet5("modern", seed=5)
        return m, AdamW(m.params(), m.grads(), lr=0.003, weight_decay=0.05)

    ref, ref_opt = fresh()
    fit(ref, data, optimizer=ref_opt, **kw)
    model, opt = fresh()
    calls = {"n": 0}
    with pytest.raises(Interrupted) as e:
        fit(model, data, optimizer=opt, **kw,
            hooks=Hooks(should_stop=lambda: calls.update(n=calls["n"] + 1) or calls["n"] == 13))
    model2, opt2 = fresh()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())
    fit(model2, data, optimizer=opt2, **kw, state=e.value.state)
    for k, v in ref.state_dict().items():  # batch-norm running statistics included
        np.testing.assert_array_equal(model2.state_dict()[k], v, err_msg=k)


def test_preset_recipe_and_option_checks(tmp_path, mini_dir, capsys):
    out = tmp_path / "m"
    assert cli.main(["train", "--no-plots", "--preset", "modern", "--epochs", "1", "--data-dir", str(mini_dir), "--dataset", "mnist",
                     "--out", str(out), "--quiet"]) == 0
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["optimizer"], settings["augment"], settings["schedule"]) == ("adamw", "affine", "onecycle")
    assert LeNet5("modern").layer("f6_drop").p == 0.1
    assert cli.main(["train", "--no-plots", "--optimizer", "adam", "--momentum", "0.9", "--data-dir",
                     str(mini_dir)]) == 2
    assert "--momentum/--nesterov apply to --optimizer sgd" in capsys.readouterr().err


def test_live_reads_ignore_only_an_unterminated_last_line(tmp_path):
    from lenet5.errors import Lenet5Error
    from lenet5.runs import RunDir

    run = RunDir(tmp_path)
    epoch = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.4, "test_acc": 0.85, "seconds": 1.0}
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(epoch) + "\n" + '{"epoch": 2, "train_')  # the trainer is writing line 2
    assert run.history(live=True) == [epoch]
    with pytest.raises(Lenet5Error) as e:
        run.history()
    assert str(e.value) == f"{path}: line 2 is not valid JSON (truncated?)"
    assert "\n" not in str(e.value)
    path.write_text(json.dumps(epoch) + "\n" + '{"epoch": 2, "train_\n' + json.dumps({**epoch, "epoch": 3}) + "\n")
    for live in (False, True):  # a terminated line is finished: damaged is damaged, live or not
        with pytest.raises(Lenet5Error, match=r"metrics\.jsonl: line 2 is not valid JSON"):
            run.history(live=live)
    path.write_text(json.dumps({"epoch": 2}) + "\n")
    for live in (False, True):
        with pytest.raises(Lenet5Error, match=r"metrics\.jsonl: line 1: 'train_loss' is missing"):
            run.history(live=live)
    (tmp_path / "batch_metrics.jsonl").write_text('{"epoch": 1, "loss": [0.5]}\n{"epoch": 2, "lo')
    assert run.batch_losses(live=True) == [{"epoch": 1, "loss": [0.5]}]
    with pytest.raises(Lenet5Error, match=r"batch_metrics\.jsonl: line 2 is not valid JSON"):
        run.batch_losses()


@pytest.mark.parametrize("preset,batch_size,augment", [("lecun1998", 1, "lecun1998"), ("seed-tanh", 7, "affine"),
                                                       ("seed-tanh", 300, "none"), ("seed-tanh", 16, "affine-pen-junk")])
def test_chunked_pass_equals_a_step_by_step_loop(mini_dir, preset, batch_size, augment):
    """fit prepares steps a chunk at a time; written out one step at a time (each step's
    images augmented by the step's own generator, and labelled as the augmentation says (a
    picture that is not one digit gets a random label), then coded, then one train_step), the
    weights come out the same."""
    from lenet5 import resolve
    from lenet5.augment import make_augment
    from lenet5.data import Dataset, Split, batches
    from lenet5._cpu import blas_single_thread
    from lenet5.losses import Criterion
    from lenet5.train import train_step

    full = load_dir(mini_dir)
    data = Dataset(Split(full.train.images[:600], full.train.labels[:600]), full.test)
    kw = dict(epochs=1, batch_size=batch_size, seed=3, lr=1e-4 if preset == "lecun1998" else 0.05,
              schedule="constant", augment=augment)
    model = LeNet5(preset, seed=3)
    fit(model, data, progress=False, **kw)

    ref = LeNet5(preset, seed=3)
    opt = ref.make_optimizer(resolve(preset, **kw))
    opt.prepare_epoch(ref, data.train, np.random.default_rng([3, 1, 2]))
    aug = make_augment(augment)
    criterion = Criterion(ref.preset.criteria[0])
    with blas_single_thread():  # BLAS on one thread, as in fit's passes (a product's round-off depends on it)
        for b, idx in enumerate(batches(len(data.train), batch_size, np.random.default_rng(3))):
            images, labels = data.train.images[idx], data.train.labels[idx]
            if aug is not None:
                draws = aug.draw(len(idx), np.random.default_rng([3, 1, b, 0, 0]))
                images, labels = aug.apply(images, draws), aug.labels(labels, draws)
            train_step(ref, criterion, opt, ref.prepare(images), labels)
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)

