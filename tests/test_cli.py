"""The lenet5 command end to end, on the committed MNIST slice, in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from lenet5 import cli


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})


def test_train_then_evaluate(tmp_path, mini_dir):
    out = tmp_path / "run"
    r = run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 2, "--batch-size", 32, "--out", out, "--seed", 1)
    assert r.returncode == 0, r.stderr
    assert "epoch   2/2" in r.stdout and "test loss" in r.stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert set(lines[0]) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["batch_size"] == 32 and config["data"]["train_size"] == 300

    e = run("evaluate", out / "model.safetensors", "--data-dir", mini_dir, "--json")
    assert e.returncode == 0, e.stderr
    result = json.loads(e.stdout)
    assert result["n"] == 200 and result["accuracy"] == pytest.approx(lines[-1]["test_acc"])
    assert result["loss"] == pytest.approx(lines[-1]["test_loss"], rel=1e-5)
    assert sum(map(sum, result["confusion"])) == 200
    text = run("evaluate", out / "model.safetensors", "--data-dir", mini_dir)
    assert "confusion matrix" in text.stdout and "per-class accuracy" in text.stdout
    flipped = run("evaluate", out / "model.safetensors", "--data-dir", mini_dir, "--tta", "flip", "--json")
    assert flipped.returncode == 0, flipped.stderr
    assert json.loads(flipped.stdout)["tta"] == "flip" and result["tta"] == "none"


def test_same_command_twice_gives_identical_weights(tmp_path, mini_dir):
    for name in "ab":
        r = run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 1, "--train-limit", 100, "--out", tmp_path / name,
                "--seed", 5, "--quiet")
        assert r.returncode == 0, r.stderr
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_never_overwrites_a_run_without_force(tmp_path, mini_dir):
    out = tmp_path / "run"
    assert run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 1, "--out", out, "--quiet").returncode == 0
    before = (out / "model.safetensors").read_bytes()
    r = run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 1, "--out", out, "--quiet", "--seed", 3)
    assert r.returncode == 2 and "not empty" in r.stderr and "--force" in r.stderr
    assert (out / "model.safetensors").read_bytes() == before
    assert run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 1, "--out", out, "--quiet", "--seed", 3,
               "--force").returncode == 0
    assert (out / "model.safetensors").read_bytes() != before


def test_default_run_dirs_are_fresh(tmp_path, mini_dir):
    for _ in range(2):
        assert run("train", "--no-plots", "--data-dir", mini_dir, "--epochs", 1, "--train-limit", 50, "--quiet",
                   cwd=tmp_path).returncode == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--batch-size", "-3"], "--batch-size: must be >= 1"),
    (["--lr", "nan"], "--lr: must be a positive finite number"),
    (["--lr", "0"], "--lr: must be a positive finite number"),
    (["--momentum", "1.5"], "--momentum: must be in [0, 1)"),
    (["--preset", "vgg"], "invalid choice: 'vgg'"),
])
def test_bad_arguments(mini_dir, args, message):
    r = run("train", "--no-plots", "--data-dir", mini_dir, *args)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_files_exit_nonzero_without_traceback(tmp_path, mini_dir):
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    results = [run("train", "--no-plots", "--data-dir", tmp_path / "nowhere"),
               run("evaluate", tmp_path / "bad.safetensors", "--data-dir", mini_dir)]
    assert "nowhere: data directory does not exist" in results[0].stderr
    assert "bad.safetensors: not a readable safetensors" in results[1].stderr
    for r in results:
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_summary(tmp_path):
    r = run("summary", "--json")
    info = json.loads(r.stdout)
    assert info["total_params"] == 156 + 2416 + 48120 + 10164 + 850
    assert [x["output_shape"] for x in info["layers"] if x["name"] in ("c1", "s2", "c3", "s4", "c5")] == [
        [6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 5, 5], [120, 1, 1]]


def test_torch_engine_without_torch_says_how_to_install(mini_dir, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from lenet5.cli import main\n"
            f"sys.exit(main(['train', '--engine', 'torch', '--data-dir', {str(mini_dir)!r}, '--out', "
            f"{str(tmp_path / 'r')!r}, '--epochs', '1']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "PyTorch is not installed" in r.stderr and "pip install" in r.stderr
    assert "Traceback" not in r.stderr
    # and the NumPy engine does not need torch at all
    code = code.replace("'--engine', 'torch', ", "").replace("/r'", "/r2'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compare_table(tmp_path, mini_dir, capsys):
    for name, preset in [("a", "seed-tanh"), ("b", "seed-sigmoid")]:
        assert cli.main(["train", "--no-plots", "--preset", preset, "--epochs", "2", "--data-dir", str(mini_dir),
                         "--out", str(tmp_path / name), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--markdown", "--output",
                     str(tmp_path / "t.md")]) == 0
    table = capsys.readouterr().out
    assert table == (tmp_path / "t.md").read_text()
    lines = table.splitlines()
    assert lines[0].startswith("| run | preset | dataset | train images | epochs")
    assert "| a | seed-tanh | unrecognised | 300 | 2 |" in lines[2] and "| b | seed-sigmoid |" in lines[3]
    final = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]
    assert f"{100 * final:.2f}%" in lines[2]
    assert cli.main(["compare", str(tmp_path)]) == 2


def test_no_test_leaves_the_test_set_alone(tmp_path, mini_dir):
    out = tmp_path / "val"
    r = run("train", "--data-dir", mini_dir, "--epochs", 2, "--val-split", 0.2, "--no-test", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "val acc" in r.stdout and "test" not in r.stdout.split("->")[-1]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc" in x and "test_acc" not in x and "test_loss" not in x for x in lines)
    assert json.loads((out / "config.json").read_text())["settings"]["test_each_epoch"] is False
    figures = {p.name for p in out.glob("*.png")}
    assert {"curves.png", "kernels.png"} <= figures and not figures & {"confusion.png", "wrong.png", "feature_maps.png"}
    c = run("compare", out)
    assert c.returncode == 0, c.stderr
    e = run("evaluate", out / "model.safetensors", "--data-dir", mini_dir, "--json")  # asked for: it may look
    assert e.returncode == 0 and json.loads(e.stdout)["n"] == 200


def test_widths_train_save_load_and_evaluate(tmp_path, mini_dir):
    out = tmp_path / "wide"
    r = run("train", "--preset", "modern", "--widths", "8,12,40", "--data-dir", mini_dir, "--dataset", "mnist", "--epochs", 1,
            "--out", out, "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    from lenet5 import load_checkpoint

    model, _ = load_checkpoint(out / "model.safetensors")
    assert model.widths == (8, 12, 40) and model.params()["c5.weight"].shape == (40, 12, 5, 5)
    e = run("evaluate", out / "model.safetensors", "--data-dir", mini_dir, "--json")
    assert e.returncode == 0, e.stderr
    bad = run("train", "--preset", "modern", "--widths", "8,12", "--data-dir", mini_dir)
    assert bad.returncode == 2 and "--widths" in bad.stderr and "Traceback" not in bad.stderr
    other = run("train", "--preset", "seed-tanh", "--widths", "8,12,40", "--data-dir", mini_dir)
    assert other.returncode == 2 and "--widths applies to --preset modern" in other.stderr


def test_distort_draws_from_the_papers_pool():
    """--distort is the 1998 paper's distortions with one image in ten left as it is (its
    training set held 60,000 originals beside 540,000 distortions)."""
    args = cli.build_parser().parse_args(["train", "--preset", "lecun1998", "--distort"])
    assert args.augment == "lecun1998-pool"


# --------------------------------------------------------------------------- bench names the CPU
def test_bench_names_the_vector_extensions_from_the_cpu_flags(monkeypatch):
    from lenet5 import bench

    monkeypatch.setattr(bench, "_cpu_flags", lambda: {"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"})
    found = bench.vector_extensions()
    assert found == ["SSE4.2", "AVX", "AVX2", "FMA", "AVX-512F", "AVX-512BW"]
    assert bench.vector_summary(found) == "AVX2, FMA, AVX-512 (F, BW)"
    monkeypatch.setattr(bench, "_cpu_flags", lambda: {"fp", "asimd"})
    assert bench.vector_summary(bench.vector_extensions()) == "NEON"


def test_bench_falls_back_to_numpys_cpu_features(monkeypatch):
    from lenet5 import bench

    monkeypatch.setattr(bench, "_cpu_flags", lambda: None)
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as features
    assert ("AVX2" in bench.vector_extensions()) == bool(features.get("AVX2"))


def test_bench_header_and_json_name_this_cpus_extensions(capsys):
    import pathlib

    flags = next((set(line.split(":", 1)[1].split()) for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), None) if pathlib.Path("/proc/cpuinfo").exists() else None
    if flags is None:
        pytest.skip("no x86 /proc/cpuinfo flags here")
    small = ["--batch-sizes", "4", "--steps", "1", "--repeats", "1", "--infer-images", "8"]
    assert cli.main(["bench", *small, "--json"]) == 0
    env = json.loads(capsys.readouterr().out)["environment"]
    assert ("AVX2" in env["vector_extensions"]) == ("avx2" in flags)
    assert ("AVX-512F" in env["vector_extensions"]) == ("avx512f" in flags)
    assert cli.main(["bench", *small]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert env["cpu"] in header and (("AVX-512 (F" in header) == ("avx512f" in flags))


# --------------------------------------------------------------------------- help that guides
def _all_parsers():
    """(command path, parser) for lenet5 and every subcommand, however deep."""
    import argparse

    todo, found = [(("lenet5",), cli.build_parser())], []
    while todo:
        path, parser = todo.pop()
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(path + (name,), sub) for name, sub in action.choices.items()]
    return found


def test_every_option_of_every_command_has_help_text():
    missing = [(" ".join(path), action.option_strings or action.dest) for path, parser in _all_parsers()
               for action in parser._actions
               if not action.help and type(action).__name__ != "_SubParsersAction"]
    assert not missing, missing


def test_every_command_shows_examples():
    leaves = [(path, parser) for path, parser in _all_parsers() if len(path) == 2]
    assert len(leaves) >= 10
    for path, parser in leaves:
        text = parser.format_help()
        assert "examples:" in text and f"lenet5 {path[1]}" in text.split("examples:")[1], path


def test_train_help_groups_newcomers_options_first():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    order = [text.index(h) for h in ("start here:", "recipe:", "one preset only:", "run control:",
                                     "each preset's recipe", "examples:")]
    assert order == sorted(order)
    first = text[text.index("start here:"):text.index("recipe:")]
    assert all(o in first for o in ("--preset", "--epochs", "--dataset", "--data-dir", "--out"))
    assert "--lr" not in first and "--widths" not in first and "--resume" not in first
    for removed in ("--label-smoothing", "--cutout", "--ema", "elastic-mild"):
        assert removed not in text


def test_train_help_recipes_are_generated_from_the_presets(monkeypatch):
    from lenet5 import presets

    def recipe_line(name):
        lines = cli.recipes_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        more = [line for line in lines[start + 1:]]
        wrapped = [lines[start]] + more[:next((i for i, line in enumerate(more) if line[:16].strip()), len(more))]
        return " ".join(" ".join(wrapped).split())  # the preset's line with its continuations

    modern = presets.PRESETS["modern"]
    before = recipe_line("modern")
    assert "--optimizer adamw" in before and "--schedule onecycle" in before and "--augment auto" in before
    changed = {**modern.recipe, "lr": 0.0123, "epochs": 77}
    monkeypatch.setitem(presets.PRESETS, "modern", presets.dataclasses.replace(modern, recipe=changed))
    after = recipe_line("modern")
    assert "--lr 0.0123" in after and "--epochs 77" in after and "--lr 0.0123" not in before
    # the preset-only defaults come from the network itself
    assert "--widths 6,16,120" in before and "--dropout 0.1" in before
    assert "--criterion map" in recipe_line("lecun1998") and "--batch-size 1" in recipe_line("lecun1998")


def test_bare_lenet5_prints_the_overview_and_version_works():
    import lenet5

    r = run()
    assert r.returncode == 0 and "COMMAND" in r.stdout and "train" in r.stdout and "examples:" in r.stdout
    assert "required" not in r.stderr
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lenet5 {lenet5.__version__}"


@pytest.mark.parametrize("argv, said", [
    (["trian"], "did you mean train?"),
    (["train", "--preset", "modrn"], "did you mean modern?"),
    (["train", "--dataset", "fashion"], "did you mean fashion-mnist?"),
    (["evaluate", "--dataset", "kmnsit"], "did you mean kmnist?"),
    (["data", "path", "minst"], "did you mean mnist?"),
])
def test_a_mistyped_command_preset_or_dataset_gets_did_you_mean(argv, said, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1


def test_a_hopeless_typo_gets_the_choices_only(capsys):
    assert cli.main(["train", "--preset", "xyzzy"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "seed-tanh" in err
