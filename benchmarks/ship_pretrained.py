"""Pack a finished run as a pretrained model: src/lenet5/weights/NAME.safetensors + MANIFEST.json.

    python benchmarks/ship_pretrained.py NAME RUN_DIR

The file is the run's state dict with metadata: preset, dtype, settings, data (files with
SHA-256), the exact command that trained it, and its accuracy on the official test set,
measured here on the run's own test data.
"""

import hashlib
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lenet5 import save_checkpoint  # noqa: E402
from lenet5.datasets import load_dataset  # noqa: E402
from lenet5.zoo import DIRECTORY, MANIFEST  # noqa: E402
from lenet5.runs import RunDir  # noqa: E402
from lenet5.train import evaluate  # noqa: E402


def main(name: str, run_path: str) -> None:
    run = RunDir.open(run_path)
    config = run.read_config()
    settings, data_info = config["settings"], config["data"]
    model, _ = run.load_model()
    data = load_dataset(settings["dataset"], settings.get("data_dir"), progress=False)
    result = evaluate(model.eval(), data.test)
    command = "lenet5 " + shlex.join(config["command"][1:])
    DIRECTORY.mkdir(exist_ok=True)
    path = DIRECTORY / f"{name}.safetensors"
    save_checkpoint(path, model, {"name": name, "settings": settings, "data": data_info, "command": command,
                                  "epoch": len(run.history()), "test_acc": result["accuracy"],
                                  "test_size": result["n"]})
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest[name] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "preset": model.preset.name, "dataset": settings["dataset"],
                      "test_accuracy": result["accuracy"], "test_size": result["n"], "command": command}
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(f"{path}: {model.preset.name} on {settings['dataset']}, test accuracy {100 * result['accuracy']:.2f}% "
          f"({result['n']} images), {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
