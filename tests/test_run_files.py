"""The files around a run are inputs too (issue 28): config.json, metrics.jsonl and
batch_metrics.jsonl of any content, kind or size give a correct result or one line naming the
file and key; writes never replace what is not a regular file of the run's; --force touches only
an earlier lenet5 run, and only the files a run writes."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet5 import cli
from lenet5.checkpoint import atomic_write
from lenet5.errors import Lenet5Error, RunFileError
from lenet5.runs import LIMITS, RunDir

CONFIG = {"settings": {"preset": "seed-tanh", "engine": "numpy", "augment": "none", "optimizer": "sgd", "epochs": 2},
          "data": {"dataset": "mnist", "train_size": 300, "test_size": 200}, "command": ["lenet5"]}
EPOCH = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.4, "test_acc": 0.85, "seconds": 2.0,
         "train_seconds": 1.5}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=10)


def make_run(path: Path, config=CONFIG, epochs=(EPOCH,), batches=({"epoch": 1, "loss": [0.9, 0.7]},)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    (path / "batch_metrics.jsonl").write_text("".join(json.dumps(b) + "\n" for b in batches))
    (path / ".lock").write_text("")
    return path


def compare(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unexpected" not in err and len(lines[0]) <= 500, err
    for f in fragments:
        assert f in err, err


# --------------------------------------------------------------------------- values of any type
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(EPOCH)), value=json_values)
def test_compare_on_any_metrics_value_is_a_table_or_one_line_naming_file_and_key(tmp_path, capsys, key, value):
    run = make_run(tmp_path / "run", epochs=[{**EPOCH, key: value}])
    code, out, err = compare(capsys, run)
    if code == 0:  # the row printed is the value as given: a number it could use
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert "run" in out.splitlines()[0]
    else:
        assert_one_line(code, err, "metrics.jsonl", f"'{key}'")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(part=st.sampled_from(["settings", "data"]), key=st.sampled_from(["preset", "engine", "augment", "optimizer",
                                                                         "dataset", "train_size", "test_size"]),
       value=json_values)
def test_compare_on_any_config_value_is_a_table_or_one_line(tmp_path, capsys, part, key, value):
    config = json.loads(json.dumps(CONFIG))
    config[part][key] = value
    code, out, err = compare(capsys, make_run(tmp_path / "run", config=config))
    if code != 0:
        assert_one_line(code, err, "config.json", f"'{key}'")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_batch_losses_value_is_read_or_refused_naming_the_key(tmp_path, value):
    run = RunDir(make_run(tmp_path / "run", batches=[{"epoch": 1, "loss": value}]))
    try:
        records = run.batch_losses()
    except RunFileError as e:
        assert "batch_metrics.jsonl" in str(e) and "'loss'" in str(e)
    else:
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in records[0]["loss"])


@pytest.mark.parametrize("text,fragment", [("[" * 100_000, "not valid JSON"), ("\xff", "not valid JSON"),
                                           ("[1, 2]", "expected an object"), ('{"settings": {}}', "'data' is missing"),
                                           ('{"settings": [], "data": {}}', "'settings' must be an object")])
def test_damaged_config_json_is_one_line(tmp_path, capsys, text, fragment):
    run = make_run(tmp_path / "run")
    (run / "config.json").write_text(text)
    assert_one_line(*compare(capsys, run)[::2], "config.json", fragment)


def test_a_hostile_value_is_echoed_short(tmp_path, capsys):
    run = make_run(tmp_path / "run", epochs=[{**EPOCH, "seconds": "9" * 2_000_000}])
    code, _, err = compare(capsys, run)
    assert_one_line(code, err, "'seconds'")
    assert len(err) < 400


# --------------------------------------------------------------------------- kinds and sizes of file
@pytest.mark.parametrize("verb,name", [("compare", "config.json"), ("compare", "metrics.jsonl"),
                                       ("plot", "config.json"), ("plot", "metrics.jsonl"),
                                       ("resume", "config.json")])  # what each command reads first
def test_a_fifo_run_file_is_refused_at_once(tmp_path, name, verb):
    run = make_run(tmp_path / "run")
    (run / name).unlink()
    os.mkfifo(run / name)
    args = {"compare": ["compare", run], "plot": ["plot", run],
            "resume": ["train", "--resume", run, "--quiet", "--no-plots"]}[verb]
    r = subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=60)  # a FIFO opened for reading would block here forever
    assert_one_line(r.returncode, r.stderr, name, "FIFO")


@pytest.mark.parametrize("name", ["metrics.jsonl", "batch_metrics.jsonl", "config.json"])
def test_a_run_file_linked_out_of_the_run_is_refused(tmp_path, name):
    run = make_run(tmp_path / "run")
    (run / name).unlink()
    (run / name).symlink_to("/dev/zero")
    with pytest.raises(RunFileError, match="outside the run directory"):
        RunDir(run).read_config() if name == "config.json" else (RunDir(run).history(), RunDir(run).batch_losses())


def test_a_symlink_inside_the_run_is_followed(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "metrics.jsonl").rename(run / "m.jsonl")
    (run / "metrics.jsonl").symlink_to("m.jsonl")
    assert RunDir(run).history()[0]["epoch"] == 1


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_an_oversized_run_file_is_refused_before_reading(tmp_path, name):
    run = make_run(tmp_path / "run")
    with open(run / name, "ab") as f:  # sparse: costs no disk and, refused by its size, no memory
        f.truncate(LIMITS[name] + 1)
    r = subprocess.run([sys.executable, "-c", f"""
from lenet5.runs import RunDir
from lenet5.errors import RunFileError
run = RunDir({str(run)!r})
try:
    run.read_config(); run.history(); run.batch_losses(); run.progress()
except RunFileError as e:
    print(e)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""], capture_output=True, text=True, timeout=60)  # VmHWM: ru_maxrss would carry pytest's own peak
    message, rss_kb = r.stdout.strip().splitlines()
    assert name in message and "more than the" in message
    assert int(rss_kb) < 150_000, rss_kb


# --------------------------------------------------------------------------- writing
def device_node(path: Path) -> bool:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "device", "dangling-symlink"])
def test_atomic_write_replaces_only_a_regular_file(tmp_path, kind):
    target, outside = tmp_path / "out", tmp_path / "outside.txt"
    outside.write_text("precious\n")
    if kind == "directory":
        target.mkdir()
    elif kind == "symlink":
        target.symlink_to(outside)
    elif kind == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(target)
    elif not device_node(target):
        pytest.skip("mknod needs root")
    before = os.lstat(target).st_mode
    with pytest.raises(Lenet5Error, match="refusing to replace it"):
        atomic_write(target, lambda tmp: Path(tmp).write_text("new"))
    assert os.lstat(target).st_mode == before and outside.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "outside.txt"])  # no temporary left


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(200, 600))
def test_atomic_write_long_names_write_or_one_line(tmp_path, n):
    target = tmp_path / ("é" * (n // 2))  # two bytes each in UTF-8
    try:
        atomic_write(target, lambda tmp: Path(tmp).write_text("x"))
    except Lenet5Error as e:
        assert len(os.fsencode(target.name)) > 255 and "255" in str(e) and len(str(e)) < 400
    else:
        assert target.read_text() == "x" and len(os.fsencode(target.name)) <= 255
        target.unlink()


@pytest.mark.parametrize("args", [["compare", "RUN", "--output", "LONG"], ["train", "--resume", "LONG"],
                                  ["plot", "LONG"], ["compare", "LONG"]])
def test_file_names_over_255_bytes_are_one_line(tmp_path, capsys, args):
    run = make_run(tmp_path / "run")
    argv = [str(run) if a == "RUN" else str(tmp_path / ("x" * 300)) if a == "LONG" else a for a in args]
    code = cli.main(argv)
    assert_one_line(code, capsys.readouterr().err, "x" * 50)


@pytest.mark.parametrize("name,use", [(".lock", lambda run: run.lock()),
                                      ("metrics.jsonl", lambda run: run.log_epoch(EPOCH, [0.5]))],
                         ids=["locking", "appending"])
def test_a_run_file_symlinked_out_of_the_run_is_refused_and_its_target_untouched(tmp_path, name, use):
    run = make_run(tmp_path / "run")
    outside = tmp_path / "precious.txt"
    outside.write_text("precious\n")
    (run / name).unlink()
    (run / name).symlink_to(outside)
    with pytest.raises(Lenet5Error, match="symlink"):
        use(RunDir(run))
    assert outside.read_text() == "precious\n"


# --------------------------------------------------------------------------- --force
def test_force_refuses_a_directory_that_is_not_a_lenet5_run(tmp_path, mini_dir, capsys):
    d = tmp_path / "my-project"
    d.mkdir()
    files = {n: f"the user's {n}\n" for n in ("photo.png", "config.json", "metrics.jsonl", "notes.txt")}
    for n, text in files.items():
        (d / n).write_text(text)
    code = cli.main(["train", "--data-dir", str(mini_dir), "--out", str(d), "--force", "--epochs", "1", "--quiet",
                     "--no-plots"])
    assert_one_line(code, capsys.readouterr().err, "not a lenet5 run", "photo.png")
    assert {p.name: p.read_text() for p in d.iterdir()} == files


def test_force_over_a_lenet5_run_removes_only_what_a_run_wrote(tmp_path):
    run = make_run(tmp_path / "run")
    for name in ("curves.png", ".model.safetensors.abc123.tmp", "notes.txt", "photo.png"):
        (run / name).write_text("x")
    RunDir.create(run, "seed-tanh", force=True).unlock()
    assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt", "photo.png"]


def test_force_over_a_run_holding_only_its_lock(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / ".lock").write_text("")
    RunDir.create(d, "seed-tanh", force=True).unlock()
    assert [p.name for p in d.iterdir()] == [".lock"]


# --------------------------------------------------------------------------- options that cannot go together
@pytest.mark.parametrize("args,fragment", [
    (["--resume", "RUN", "--out", "OTHER"], "--out cannot be used with --resume"),
    (["--augment", "none", "--distort"], "--distort"),
    (["--distort", "--augment", "affine"], "--distort"),
])
def test_contradicting_options_are_refused(tmp_path, capsys, mini_dir, args, fragment):
    run = make_run(tmp_path / "run")
    argv = [str(run) if a == "RUN" else str(tmp_path / "other") if a == "OTHER" else a for a in args]
    code = cli.main(["train", "--data-dir", str(mini_dir), "--quiet", "--no-plots", *argv])
    assert_one_line(code, capsys.readouterr().err, fragment)
    assert not (tmp_path / "other").exists()


def test_show_input_never_writes_through_a_symlink(tmp_path):
    import numpy as np

    from lenet5.predict import ImageError, save_inputs

    seen, outside = tmp_path / "seen", tmp_path / "precious.txt"
    seen.mkdir()
    outside.write_text("precious\n")
    (seen / "7-input.png").symlink_to(outside)
    with pytest.raises(ImageError, match="symlink"):
        save_inputs([np.zeros((28, 28), np.uint8)], ["7.png"], seen)
    assert outside.read_text() == "precious\n"
    assert [p.name for p in save_inputs([np.zeros((28, 28), np.uint8)], ["8.png"], seen)] == ["8-input.png"]


def test_progress_is_written_by_a_run_and_read_checked(tmp_path, mini_dir):
    """progress.json: a run's last step of each epoch is its last word; a damaged one is one line."""
    from lenet5 import cli
    from lenet5.errors import Lenet5Error
    from lenet5.runs import PROGRESS, RunDir

    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(mini_dir), "--dataset", "mnist", "--epochs", "2", "--batch-size", "50",
                     "--out", str(out), "--quiet", "--no-plots"]) == 0
    progress = RunDir.open(out).progress()
    assert progress["epoch"] == 2 and progress["batch"] == progress["batches"] == 6  # 300 images / 50
    assert progress["loss"] == pytest.approx(json.loads(
        (out / "batch_metrics.jsonl").read_text().splitlines()[-1])["loss"][-1])
    for bad in ('{"epoch": "two", "batch": 1, "batches": 6, "loss": 1.0}', "[1, 2]", "{"):
        (out / PROGRESS).write_text(bad)
        with pytest.raises(Lenet5Error, match="progress.json"):
            RunDir.open(out).progress()
