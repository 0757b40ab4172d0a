"""Run directories that cannot be corrupted, checkpoints that load anywhere, and not one
traceback: the run-side cases of the hostile-input probe (issue #12)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lenet5 import cli
from lenet5.runs import RunDir


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_line_error(r, *fragments):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def train(out, mini_dir, *extra):
    # the fixture is a slice of MNIST that no published checksum names: --dataset says what it is
    return cli.main(["train", "--no-plots", "--quiet", "--data-dir", str(mini_dir), "--dataset", "mnist", "--out", str(out),
                     *extra])


@pytest.mark.parametrize("preset", ["seed-tanh", "seed-sigmoid", "modern", "lecun1998"])
def test_readme_snippet_loads_model_safetensors_strictly_into_the_replica(tmp_path, mini_dir, preset):
    pytest.importorskip("torch")
    out = tmp_path / preset
    assert train(out, mini_dir, "--preset", preset, "--epochs", "1", "--train-limit", "64") == 0
    # the README's snippet, verbatim but for the path and preset
    import lenet5.torch_replica, safetensors.torch  # noqa: E401
    net = lenet5.torch_replica.build(preset)
    net.load_state_dict(safetensors.torch.load_file(str(out / "model.safetensors")))  # strict by default


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path, mini_dir):
    out = tmp_path / "r"
    holder = RunDir.create(out, "seed-tanh")  # this process holds the lock
    r = run("train", "--no-plots", "--data-dir", mini_dir, "--out", out, "--force", "--epochs", 1)
    one_line_error(r, "in use by another lenet5 run", f"process {os.getpid()}")
    holder.unlock()
    assert run("train", "--no-plots", "--data-dir", mini_dir, "--out", out, "--force", "--epochs", 1,
               "--quiet").returncode == 0


def test_force_clears_the_old_run_so_divergence_never_blames_its_checkpoint(tmp_path, mini_dir, monkeypatch, capsys):

    out = tmp_path / "r"
    assert train(out, mini_dir, "--preset", "modern", "--epochs", "1") == 0
    from lenet5.losses import Criterion

    real = Criterion.loss
    monkeypatch.setattr(Criterion, "loss", lambda self, z, y: (float("nan"), real(self, z, y)[1]))
    capsys.readouterr()
    assert train(out, mini_dir, "--force", "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert "loss became nan" in err and "last good checkpoint" not in err
    assert not (out / "model.safetensors").exists() and not (out / "train_state.safetensors").exists()
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out), "--quiet", "--no-plots"]) == 2
    assert "no train_state.safetensors yet" in capsys.readouterr().err


def test_files_honour_the_umask(tmp_path, mini_dir):
    old = os.umask(0o022)
    try:
        assert train(tmp_path / "r", mini_dir, "--epochs", "1") == 0
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "train_state.safetensors"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o644, name


def test_resume_refuses_conflicting_options_and_changed_data(tmp_path, mini_dir, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(mini_dir, data)
    out = tmp_path / "r"
    assert train(out, data, "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--lr", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "conflicting: --lr 0.5 (run: 0.1)" in err and "Only --epochs may change" in err
    images = data / next(p.name for p in data.iterdir() if p.name.startswith("train-images"))
    raw = bytearray(images.read_bytes())
    (data / images.name).unlink()
    import gzip
    plain = bytearray(gzip.decompress(bytes(raw)) if images.name.endswith(".gz") else raw)
    plain[-1] ^= 0xFF  # one pixel changed
    (data / images.name).write_bytes(gzip.compress(bytes(plain)) if images.name.endswith(".gz") else bytes(plain))
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-plots"]) == 2
    assert "data files changed" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-plots", "--force-data"]) == 0


def test_resume_removes_kill_leftovers_and_never_logs_an_epoch_twice(tmp_path, mini_dir):
    out = tmp_path / "r"
    assert train(out, mini_dir, "--epochs", "1") == 0
    (out / ".model.safetensors.abc123.tmp").write_bytes(b"half a file")
    with open(out / "metrics.jsonl", "a") as f:  # an epoch logged after the last checkpoint, then a kill
        f.write(json.dumps({"epoch": 2, "train_loss": 1, "train_acc": 0, "test_loss": 1, "test_acc": 0,
                            "seconds": 1}) + "\n")
    with open(out / "batch_metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "loss": [1.0]}) + "\n")
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet", "--no-plots"]) == 0
    assert not list(out.glob(".*.tmp"))
    run_dir = RunDir.open(out)
    assert [r["epoch"] for r in run_dir.history()] == [1, 2, 3]
    assert [r["epoch"] for r in run_dir.batch_losses()] == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_and_stop_like_ctrl_c(tmp_path, mini_dir, sig):
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "lenet5.cli", "train", "--no-plots", "--data-dir", str(mini_dir),
                          "--epochs", "200", "--batch-size", "8", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.1)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and f"lenet5 train --resume {out}" in err
    _, _, _, _, state = RunDir.open(out).load_resume()  # what was saved on the signal reads back
    assert state.epoch >= 1
    target = state.epoch + 1
    assert cli.main(["train", "--resume", str(out), "--epochs", str(target), "--quiet", "--no-plots"]) == 0
    assert [r["epoch"] for r in RunDir.open(out).history()] == list(range(1, target + 1))


@pytest.mark.parametrize("where,fragment", [("file/run", "a parent is not a directory"),
                                            ("/proc/lenet5-run", ""), ("dangling", "dangling symlink")])
def test_bad_out_directories_are_one_line_errors(tmp_path, mini_dir, where, fragment):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    out = where if where.startswith("/") else tmp_path / where
    one_line_error(run("train", "--no-plots", "--data-dir", mini_dir, "--out", out, "--epochs", 1), fragment)


def test_default_runs_directory_in_an_unwritable_place(mini_dir):
    one_line_error(run("train", "--no-plots", "--data-dir", mini_dir.resolve(), "--epochs", 1, cwd="/proc"), "runs")


def test_a_full_disk_while_saving_is_an_error_and_keeps_the_last_checkpoint(tmp_path, mini_dir, monkeypatch, capsys):
    import lenet5.checkpoint

    out = tmp_path / "r"
    assert train(out, mini_dir, "--epochs", "1") == 0
    before = (out / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lenet5.checkpoint, "save_file", full)  # safetensors' writer, inside atomic_write
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if "error" in line] == [
        f"lenet5: error: {out / 'train_state.safetensors'}: no space left on device"]
    assert (out / "model.safetensors").read_bytes() == before


def test_compare_output_and_damaged_metrics_are_one_line_errors(tmp_path, mini_dir):
    out = tmp_path / "r"
    assert train(out, mini_dir, "--epochs", "1") == 0
    one_line_error(run("compare", out, "--output", tmp_path / "missing" / "t.md"), "t.md")
    one_line_error(run("compare", out, "--output", tmp_path), str(tmp_path))
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: len(text) // 2])
    one_line_error(run("compare", out), "metrics.jsonl: line 1 is not valid JSON")
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    one_line_error(run("plot", out), "metrics.jsonl: line 1: 'train_loss' is missing")


@pytest.mark.parametrize("args,fragment", [
    (["--seed", "-1"], "--seed"), (["--warmup-epochs", "1e308"], "--warmup-epochs"),
    (["--preset", "lecun1998", "--dropout", "0.1"], "--dropout applies to --preset modern")])
def test_out_of_range_numbers(mini_dir, args, fragment):
    one_line_error(run("train", "--no-plots", "--data-dir", mini_dir, *args), fragment)


@pytest.mark.parametrize("damage", ["settings-list", "string-batch", "extra-key", "garbage-rng", "optim-shape",
                                    "optim-partial", "optim-unknown"])
def test_damaged_resume_state_is_a_one_line_error(tmp_path, mini_dir, damage):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    out = tmp_path / "r"
    assert train(out, mini_dir, "--epochs", "1") == 0
    config = json.loads((out / "config.json").read_text())
    state_file = out / "train_state.safetensors"
    with safe_open(str(state_file), "np") as f:
        meta = f.metadata()
    tensors = load_file(str(state_file))
    state = json.loads(meta["train_state"])
    if damage == "settings-list":
        config["settings"] = list(config["settings"].items())
    elif damage == "string-batch":
        config["settings"]["batch_size"] = "64"
    elif damage == "extra-key":
        state["surprise"] = 1
    elif damage == "optim-shape":  # the c1 kernel's velocity saved transposed
        tensors["optim.velocity.c1.weight"] = np.zeros((5, 5, 1, 6), np.float32)
    elif damage == "optim-partial":  # velocity for one parameter only
        tensors["optim.velocity.c1.weight"] = np.zeros((6, 1, 5, 5), np.float32)
    elif damage == "optim-unknown":
        tensors["optim.momentum.c1.weight"] = np.zeros((6, 1, 5, 5), np.float32)
    else:
        state["rng_state"] = {"bit_generator": "PCG64", "state": "garbage"}
    (out / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(state_file), metadata={**meta, "train_state": json.dumps(state)})
    fragment = {"optim-shape": "train_state.safetensors: optimizer state 'velocity.c1.weight' has shape (5, 5, 1, 6)",
                "optim-partial": "train_state.safetensors: optimizer state 'velocity' is missing for c1.bias",
                "optim-unknown": "'momentum.c1.weight' is not '<slot>.<parameter>'"}.get(damage)
    one_line_error(run("train", "--resume", out, "--epochs", 2, "--no-plots"), *([fragment] if fragment else []))


def test_an_unexpected_failure_is_one_line_unless_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(cli, "cmd_summary", boom)
    assert cli.main(["summary"]) == 2
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: something nobody foresaw" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        cli.main(["summary", "--debug"])


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, mini_dir, tmp_path, capsys):
    import lenet5.datasets

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lenet5.datasets, "load_dataset", interrupted)  # Ctrl-C while the data loads
    assert cli.main(["train", "--no-plots", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "lenet5: interrupted" and "Traceback" not in err


# --------------------------------------------------------------------------- issue 28: a run's parts must agree
@pytest.mark.parametrize("swap", ["state", "config"])
def test_resume_of_a_run_whose_state_is_another_presets_is_one_line(tmp_path, mini_dir, swap):
    tanh, modern = tmp_path / "tanh", tmp_path / "modern"
    assert train(tanh, mini_dir, "--epochs", "1", "--train-limit", "32") == 0
    assert train(modern, mini_dir, "--preset", "modern", "--epochs", "1", "--train-limit", "32") == 0
    if swap == "state":
        (tanh / "train_state.safetensors").write_bytes((modern / "train_state.safetensors").read_bytes())
    else:
        config = json.loads((tanh / "config.json").read_text())
        config["settings"]["preset"] = "modern"
        (tanh / "config.json").write_text(json.dumps(config))
    r = run("train", "--resume", tanh, "--epochs", 2, "--no-plots", "--force-data")
    one_line_error(r, "train_state.safetensors", "state dict mismatch")
    assert "unexpected KeyError" not in r.stderr and "rerun with --debug" not in r.stderr


def test_resume_checks_config_widths_against_the_state_before_building_the_model(tmp_path, mini_dir):
    """config.json saying widths 1024,1024,1024 beside a 6,16,120 state: refused before the
    ~640 MB model they describe is allocated (run in a fresh interpreter to measure)."""
    out = tmp_path / "r"
    assert train(out, mini_dir, "--preset", "modern", "--epochs", "1", "--train-limit", "32") == 0
    config = json.loads((out / "config.json").read_text())
    config["settings"]["widths"] = [1024, 1024, 1024]
    (out / "config.json").write_text(json.dumps(config))
    code = f"""
from lenet5 import cli
status = cli.main(["train", "--resume", {str(out)!r}, "--epochs", "2", "--no-plots", "--quiet"])
print(status, next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""  # VmHWM: ru_maxrss would carry pytest's own peak into the child
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    status, rss_kb = r.stdout.split()
    assert status == "2" and "declares widths [1024, 1024, 1024]" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert int(rss_kb) < 300_000, rss_kb


def test_a_resumed_run_never_writes_through_symlinks(tmp_path, mini_dir):
    out = tmp_path / "r"
    assert train(out, mini_dir, "--epochs", "1", "--train-limit", "32") == 0
    outside = tmp_path / "precious.txt"
    outside.write_text("precious\n")
    (out / "metrics.jsonl").rename(tmp_path / "m.jsonl")
    (out / "metrics.jsonl").symlink_to(outside)
    r = run("train", "--resume", out, "--epochs", 2, "--no-plots", "--quiet")
    one_line_error(r, "metrics.jsonl", "symlink")
    assert outside.read_text() == "precious\n"
