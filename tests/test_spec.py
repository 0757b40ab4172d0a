"""One network, one description: a ModelSpec rebuilds the same network in every engine; runs
and checkpoints of earlier versions, with options since removed, still load, evaluate and
predict, and only --resume refuses them, in one line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lenet5 import LeNet5, Lenet5Error, load_checkpoint, save_checkpoint
from lenet5.checkpoint import save_tensors
from lenet5.presets import PRESETS, ModelSpec, resolve


def lenet5_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_line_error(r, *words):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_a_spec_is_checked_and_round_trips():
    spec = ModelSpec("modern", (8, 16, 32), 0.2, "float64")
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert resolve("modern", widths=(8, 16, 32), dropout=0.2, dtype="float64").spec == spec
    for bad in ({"preset": "seed-tanh", "widths": [8, 16, 32]}, {"preset": "seed-tanh", "dropout": 0.1},
                {"preset": "modern", "widths": [0, 1, 2]}, {"preset": "modern", "dtype": "float16"},
                {"preset": "nope"}, {"preset": "modern", "colour": "red"}, ["modern"]):
        with pytest.raises(Lenet5Error):
            ModelSpec.from_json(bad)


def test_a_checkpoint_records_its_spec_and_every_engine_rebuilds_the_network_from_it(tmp_path):
    torch = pytest.importorskip("torch")
    from lenet5.torch_replica import TorchModel

    model = LeNet5("modern", seed=3, widths=(5, 9, 17), dropout=0.3).eval()
    save_checkpoint(tmp_path / "m.safetensors", model)
    back, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta["model"] == {"preset": "modern", "widths": [5, 9, 17], "dropout": 0.3, "dtype": "float32"}
    assert back.spec == model.spec
    assert [layer.p for _, layer in back.layers if hasattr(layer, "p")] == [0.3, 0.3]
    engine = TorchModel.from_spec(back.spec, seed=None)
    engine.load_state_dict(back.state_dict())
    assert [m.p for m in engine.net.modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(engine.infer(images), model.infer(images), rtol=1e-4, atol=1e-5)


def test_a_checkpoint_of_an_earlier_version_still_loads(tmp_path):
    """No model spec, the widths in the settings, and a removed option (label smoothing) beside them."""
    model = LeNet5("modern", seed=1, widths=(4, 8, 16))
    settings = {**resolve("modern", widths=(4, 8, 16)).to_json(), "label_smoothing": 0.1, "ema": 0.999}
    save_tensors(tmp_path / "old.safetensors", model.state_dict(),
                 {"format": "lenet5", "preset": "modern", "dtype": "float32", "settings": settings})
    back, _ = load_checkpoint(tmp_path / "old.safetensors")
    assert back.spec == model.spec
    x = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(back.infer(x), model.eval().infer(x))


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, request):
    """A finished run whose config.json says it used --ema 0.999 and --augment elastic-mild,
    as runs of earlier versions could."""
    from conftest import MINI

    root = tmp_path_factory.mktemp("old-run")
    r = lenet5_cli("train", "--data-dir", MINI, "--epochs", "1", "--train-limit", "64", "--out", root / "run",
                   "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    config = json.loads((root / "run" / "config.json").read_text())
    config["settings"].update(ema=0.999, label_smoothing=0.0, cutout=0, augment="elastic-mild")
    (root / "run" / "config.json").write_text(json.dumps(config))
    return root / "run"


def test_a_run_with_a_removed_option_evaluates_and_predicts_but_does_not_resume(old_run, tmp_path):
    from conftest import MINI

    r = lenet5_cli("evaluate", old_run / "model.safetensors", "--data-dir", MINI)
    assert r.returncode == 0 and "accuracy" in r.stdout, r.stderr
    picture = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.pad(np.full((12, 4), 255, np.uint8), 8)).save(picture)
    r = lenet5_cli("predict", old_run / "model.safetensors", picture)
    assert r.returncode == 0, r.stderr
    r = lenet5_cli("compare", old_run)
    assert r.returncode == 0, r.stderr
    r = lenet5_cli("train", "--resume", old_run, "--epochs", "2")
    line = one_line_error(r, "--ema 0.999", "--augment elastic-mild", "no longer", "docs/results.md")
    assert "--cutout" not in line and "--label-smoothing" not in line  # recorded as off: not a reason


@pytest.mark.parametrize("option", [["--label-smoothing", "0.1"], ["--cutout", "8"], ["--ema", "0.999"],
                                    ["--augment", "elastic-mild"]])
def test_removed_options_are_gone_from_the_command_line(option):
    one_line_error(lenet5_cli("train", *option, "--epochs", "1"), option[0])


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["evaluate", "--model", "modern"]])
def test_a_device_the_numpy_engine_cannot_use_is_refused(command):
    one_line_error(lenet5_cli(*command, "--device", "cuda"), "--device cuda", "--engine torch")


def test_presets_describe_themselves_so_nothing_tests_their_names():
    """Input coding, output kind and the paper's figure are fields; lecun1998's coding is the
    paper's (paper −0.1, ink 1.175, 32×32) and the others' pixel/255 on 28×28."""
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 3, 4] = 255
    paper = PRESETS["lecun1998"].prepare(image)
    assert paper.shape == (1, 1, 32, 32) and paper[0, 0, 0, 0] == pytest.approx(-0.1)
    assert paper[0, 0, 5, 6] == pytest.approx(1.175)
    plain = PRESETS["modern"].prepare(image)
    assert plain.shape == (1, 1, 28, 28) and plain.max() == 1 and plain.sum() == 1
    assert {p.output for p in PRESETS.values()} == {"logits", "rbf"}
    assert [name for name, p in PRESETS.items() if p.paper_errors] == ["lecun1998"]
