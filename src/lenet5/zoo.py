"""The model zoo: pretrained weights shipped inside the package, to use the network untrained.

    >>> model = lenet5.pretrained("modern")          # or "seed-tanh", "lecun1998", "modern-fashion"
    >>> model.predict(images)                        # uint8 (N, 28, 28) -> probabilities
    >>> model, meta = lenet5.zoo.load("modern")      # with its metadata (command, data, accuracy)

Each model is a plain safetensors state dict (``src/lenet5/weights/NAME.safetensors``) whose
metadata records the preset, the command line that trained it, the data files' checksums and
its accuracy on the official test set. ``MANIFEST.json`` lists every file with its SHA-256;
``load`` checks the file against it before reading, so a damaged install is an error, not a
silently different model. ``benchmarks/pretrained.sh`` rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError

DIRECTORY = Path(__file__).parent / "weights"
MANIFEST = DIRECTORY / "MANIFEST.json"


def manifest() -> dict[str, dict[str, Any]]:
    """{name: {"file", "sha256", "preset", "dataset", "test_accuracy", "command"}}."""
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{MANIFEST}: unreadable pretrained manifest ({e})") from None


def available() -> list[str]:
    """Names of the pretrained models in this install."""
    return sorted(manifest())


def path(name: str) -> Path:
    """The checked file of pretrained model ``name``."""
    entries = manifest()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none in this install"
        raise CheckpointError(f"--model {name}: no such pretrained model (available: {known})")
    entry = entries[name]
    file = DIRECTORY / entry["file"]
    try:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError as e:
        raise CheckpointError(f"{file}: pretrained weights unreadable ({e.strerror or e})") from None
    if digest != entry["sha256"]:
        raise CheckpointError(f"{file}: SHA-256 {digest[:12]}... does not match the manifest "
                              f"({entry['sha256'][:12]}...): the install is damaged; reinstall lenet5")
    return file


def load(name: str):
    """(model, metadata) of pretrained model ``name`` (a ``LeNet5`` in inference mode)."""
    from .checkpoint import load_checkpoint

    model, meta = load_checkpoint(path(name))
    return model.eval(), meta


def pretrained(name: str):
    """Pretrained model ``name`` (a ``LeNet5`` in inference mode); ``available()`` lists them."""
    return load(name)[0]
