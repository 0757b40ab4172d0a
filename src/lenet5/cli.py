"""The ``lenet5`` command line: train, evaluate, predict, plot, compare, summary, data, bench.

Each command parses its arguments and delegates to the module that does the work
(``session`` for train, ``checkpoint``, ``predict``, ``plots``, ``runs``, ``datasets``, ``bench``).
Every user error (bad argument, bad file) ends in one line on stderr and exit status 2, never
a traceback; an unexpected failure also ends in one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .errors import Lenet5Error, clip, clip_repr


# --------------------------------------------------------------------------- argument types
def _number(cast, ok, requirement: str):
    """An argparse type: parse with ``cast``, then insist on ``ok(value)``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if cast is int else 'a number'}, "
                                             f"got {clip_repr(text)}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {clip(text, 60)}")
        return value
    return parse


positive_int = _number(int, lambda v: v >= 1, ">= 1")


def widths_list(text: str) -> tuple[int, ...]:
    """An argparse type: 'C1,C3,C5' -> integers (how many and how large: presets.check_widths)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers C1,C3,C5, got {clip_repr(text)}") from None
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")

#: ceilings of bench's size options: every size a user can ask for names the memory it would take
MAX_INFER_IMAGES = 1_000_000
MAX_BENCH_BATCH = 16_384
IMAGE_BYTES = 28 * 28  # one uint8 image; float32 in the network: four times that


def _bytes(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def infer_images(text: str) -> int:
    """An argparse type: how many images bench infers, at most MAX_INFER_IMAGES."""
    value = positive_int(text)
    if value > MAX_INFER_IMAGES:
        raise argparse.ArgumentTypeError(f"at most {MAX_INFER_IMAGES:,} images, got {value:,} (they alone would take "
                                         f"{_bytes(value * IMAGE_BYTES)} as bytes, four times that as float32)")
    return value


def batch_sizes(text: str) -> str:
    """An argparse type: comma-separated batch sizes for bench, each from 1 to MAX_BENCH_BATCH."""
    for part in text.split(","):
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {clip(part, 40)!r}")
        if value > MAX_BENCH_BATCH:
            raise argparse.ArgumentTypeError(f"at most {MAX_BENCH_BATCH:,} images per batch, got {value:,} "
                                             f"(its float32 inputs alone would take "
                                             f"{_bytes(value * IMAGE_BYTES * 4)})")
    return text
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
fraction = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


class _Distort(argparse.Action):
    """--distort: the same as --augment lecun1998-pool, and refused beside any other --augment."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if namespace.augment not in (None, "lecun1998-pool"):
            parser.error(f"--distort is --augment lecun1998-pool; it cannot be combined with --augment "
                         f"{namespace.augment}")
        namespace.augment, namespace.distort = "lecun1998-pool", True


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and exit with status 2, a mistyped
    choice (command, preset, dataset, ...) gets a "did you mean", and an epilog may be computed
    only when the help is shown (``epilog_fn``).

    ``intermixed=True``: positionals and options in any order (``predict CKPT --json a.png``);
    argparse would otherwise take all positionals at their first run.
    """

    def __init__(self, *args, epilog_fn=None, intermixed: bool = False, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if kwargs.get("description"):  # the raw formatter keeps the epilogs' layout; wrap the prose here
            import textwrap

            kwargs["description"] = textwrap.fill(kwargs["description"], 88)
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn
        self.intermixed, self._inside = intermixed, False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if not self.intermixed or self._inside:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {clip(message, 300)}\n")

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()

    def _check_value(self, action: argparse.Action, value) -> None:  # argparse's own hook for choices
        if action.choices is not None and value not in action.choices:
            from difflib import get_close_matches

            names = [str(c) for c in action.choices]
            near = get_close_matches(str(value), names, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {', '.join(names)}){hint}")


# --------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Parse and delegate: the options the user set become the run's TrainConfig overrides."""
    from .presets import CONFIG_FIELDS
    from .session import train

    if args.resume and args.out:
        raise Lenet5Error("--out cannot be used with --resume: a resumed run continues in its own directory")
    if args.distort and args.augment != "lecun1998-pool":  # --augment X after --distort
        raise Lenet5Error(f"--distort is --augment lecun1998-pool; it cannot be combined with --augment {args.augment}")
    options = {k: getattr(args, k) for k in CONFIG_FIELDS if getattr(args, k, None) is not None}
    if args.nesterov is False:
        options.pop("nesterov", None)
    return train(options, resume=args.resume, out=args.out, force=args.force, force_data=args.force_data,
                 progress=not args.quiet, plots=not args.no_plots, command=sys.argv)


def _load_model(checkpoint: Path | None, model_name: str | None, preset: str | None = None):
    """(model, metadata, label) from a checkpoint file or, with --model, the pretrained weights."""
    if (checkpoint is None) == (model_name is None):
        raise Lenet5Error("give a checkpoint file or --model NAME (pretrained), not both" if checkpoint
                          else "give a checkpoint file, or --model NAME for pretrained weights")
    if model_name is not None:
        from . import zoo

        model, meta = zoo.load(model_name)
        return model, meta, f"pretrained {model_name}"
    from .checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint, preset=preset)
    return model, meta, str(checkpoint)


def _evaluation_data(args: argparse.Namespace, meta: dict):
    """(dataset name, test split, its description) for ``evaluate``: --data-dir or --dataset when
    given; else the test files the checkpoint's run recorded, if they are still there unchanged
    (SHA-256); else the dataset it was trained on, from the usual places. One line on stderr
    says which, unless --data-dir or --dataset chose."""
    from .datasets import DATASETS, SAMPLE_NAME, load_dataset, load_recorded_test

    def say(message: str) -> None:
        print(f"lenet5: {message}", file=sys.stderr)

    recorded = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    trained_on = recorded.get("dataset")
    if trained_on == SAMPLE_NAME:  # the bundled sample is where MNIST falls back to offline
        trained_on = "mnist"
    # a checkpoint of a run that recorded where its files were (pretrained weights travel without them)
    if args.data_dir is None and args.dataset is None and args.model is None and recorded.get("directory"):
        test, why_not = load_recorded_test(recorded)
        if test is not None:
            say(f"evaluating on the run's own test files in {recorded['directory']} (SHA-256 as recorded)")
            described = {**recorded, "test_size": len(test)}
            return recorded.get("dataset"), test, described
        if trained_on not in DATASETS:
            raise Lenet5Error(f"the checkpoint's run trained on {trained_on or 'unrecorded'} data and its test files "
                              f"cannot be used ({why_not}); pass --data-dir DIR or --dataset NAME")
        say(f"the run's test files cannot be used ({why_not}); evaluating on {trained_on} from the usual places")
    if args.data_dir is not None:
        dataset = args.dataset  # None: the files say what they are
    else:
        dataset = args.dataset or (trained_on if trained_on in DATASETS else "mnist")
    data = load_dataset(dataset, args.data_dir, progress=not args.json)
    return data.name, data.test, data.describe()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate

    if args.engine == "numpy" and args.device != "cpu":
        raise Lenet5Error(f"--device {args.device} needs --engine torch (the NumPy engine runs on the CPU)")
    model, meta, label = _load_model(args.checkpoint, args.model, args.preset)
    if args.engine == "torch":
        from .torch_replica import TorchModel

        weights = model.state_dict()
        model = TorchModel.from_spec(model.spec, seed=None, device=args.device)
        model.load_state_dict(weights)
    name, test, described = _evaluation_data(args, meta)
    from .presets import trained_criterion

    start = time.perf_counter()
    result = evaluate(model, test, args.batch_size, tta=args.tta, criterion=trained_criterion(meta, model.preset))
    result.update(checkpoint=label, preset=model.preset.name, engine=args.engine, tta=args.tta, data=described,
                  seconds=time.perf_counter() - start)
    if args.json:
        print(json.dumps(result))
        return 0
    tta = ", each averaged with its mirror (--tta flip)" if args.tta == "flip" else ""
    print(f"{label} ({model.preset.name}) on {name} test set, {result['n']} images{tta}")
    print(f"accuracy {100 * result['accuracy']:.2f}%   loss {result['loss']:.4f}")
    print("per-class accuracy: " + "  ".join(f"{d}:{100 * a:.1f}%" for d, a in enumerate(result["per_class_accuracy"])))
    print("confusion matrix (rows: true label, columns: predicted):")
    print("      " + " ".join(f"{d:>5}" for d in range(10)))
    for d, row in enumerate(result["confusion"]):
        print(f"  {d:>2}  " + " ".join(f"{v:>5}" for v in row))
    return 0


def _class_names(meta: dict) -> list[str]:
    """The classes' names, from the dataset the checkpoint was trained on (digits: "0".."9")."""
    from .datasets import class_names, dataset_of

    return class_names(dataset_of(meta))


def cmd_predict(args: argparse.Namespace) -> int:
    """Read each picture (a digit, a number, or with a non-digit model one item); a picture that
    cannot be read is reported on its own line and the others are still read (exit status 2)."""
    from .digits import read_picture
    from .predict import ImageError, load_picture, network_outputs, save_inputs
    from .presets import trained_criterion

    inputs = list(args.inputs)
    checkpoint = None if args.model else Path(inputs.pop(0))
    if not inputs:
        raise Lenet5Error("no picture given: lenet5 predict [--model NAME | CKPT] [options] IMAGE...")
    model, meta, label = _load_model(checkpoint, args.model)
    names = _class_names(meta)
    map_j = trained_criterion(meta, model.preset).map_j  # lecun1998: its rubbish class's constant
    digits_model = names[0] == "0"  # only digits are read as numbers; other classes are one item a picture
    rbf = model.preset.output == "rbf"  # outputs are minus the RBF distances

    def tops(entry: dict) -> str:
        return "  ".join(f"{t['class_name']} ({100 * t['probability']:.1f}%"
                         + (f", RBF distance {entry['rbf_distances'][t['class']]:.1f})" if rbf else ")")
                         for t in entry["top"])

    def show(r: dict) -> None:
        if len(r["digits"]) == 1:
            print(f"{r['image']}: {r['reading']}    top: {tops(r['digits'][0])}", flush=True)
            return
        print(f"{r['image']}: {r['reading']}")
        for i, e in enumerate(r["digits"], 1):
            x0, y0, x1, y1 = e["box"]
            print(f"  digit {i} at x {x0}-{x1}, y {y0}-{y1}: {e['class_name']}    top: {tops(e)}", flush=True)

    results, seen, failed = [], [], False
    for path in inputs:
        try:
            grey, scale = load_picture(path)
            found, stages = read_picture(grey, single=args.single or not digits_model, name=str(path),
                                         judge=model.predict)
        except ImageError as e:
            print(f"lenet5: error: {e}", file=sys.stderr)
            results.append({"image": str(path), "error": str(e)})
            failed = True
            continue
        seen.append((str(path), stages))
        images = np.stack([d.image for d in found])
        logits, probs = network_outputs(model, images, clip(label), map_j)
        distances = -logits if rbf else None
        entries = []
        for i, (digit, p) in enumerate(zip(found, probs)):
            order = np.argsort(-p)[: args.top]
            entry = {"box": [round(v * scale) for v in digit.box], "prediction": int(order[0]), "class_name": names[order[0]],
                     "top": [{"class": int(c), "class_name": names[c], "probability": float(p[c])} for c in order],
                     "probabilities": [float(v) for v in p]}
            if rbf:
                entry["rbf_distances"] = [float(v) for v in distances[i]]
            entries.append(entry)
        result = {"image": str(path), "reading": "".join(e["class_name"] for e in entries) if digits_model
                  else entries[0]["class_name"], "digits": entries}
        if len(entries) == 1:  # one digit: its answer at the top level too, as before numbers were read
            result.update({k: v for k, v in entries[0].items() if k != "box"})
        results.append(result)
        if not args.json:
            show(result)
    if args.show_input and seen:
        for stage in dict.fromkeys(k for _, stages in seen for k in stages):
            pairs = [(name, stages[stage]) for name, stages in seen if stage in stages]
            save_inputs([s for _, s in pairs], [n for n, _ in pairs], args.show_input, stage=stage)
    if args.json:
        print(json.dumps(results))
    return 2 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    model, _, label = _load_model(args.checkpoint, args.model)
    path = export_onnx(model, args.output, opset=args.opset, test_data_dir=args.test_data, n_test_sets=args.test_sets)
    print(f"{path}: {model.preset.name} from {label}, ONNX opset {args.opset}, {path.stat().st_size:,} bytes"
          + (f"; test data in {args.test_data}" if args.test_data else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import zoo

    entries = zoo.manifest()
    if args.json:
        print(json.dumps(entries))
        return 0
    if not entries:
        print("no pretrained models in this install")
    for name, e in sorted(entries.items()):
        print(f"{name:<16} {e['preset']:<13} {e['dataset']:<14} test accuracy {100 * e['test_accuracy']:.2f}%")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from . import web

    return web.run(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_run

    for path in plot_run(args.run_dir, sample=args.sample):
        print(path)
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def cmd_compare(args: argparse.Namespace) -> int:
    from .runs import RunDir

    rows = [RunDir.open(d).summary() for d in args.run_dirs]
    if args.json:
        print(json.dumps(rows))
        return 0
    head = ["run", "preset", "dataset", "train images", "epochs", "augment", "final test acc", "best test acc",
            "s/epoch (train)", "total time"]
    table = [[str(r["run"]), str(r["preset"]), str(r["dataset"] or "-"),
              "-" if r["train_size"] is None else f"{r['train_size']:,}", str(r["epochs"]), str(r["augment"]),
              _percent(r["final_test_acc"]), _percent(r["best_test_acc"]),
              f"{r['train_seconds_per_epoch']:.1f}", f"{r['seconds'] / 60:.1f} min"] for r in rows]
    if args.markdown:
        text = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(row) + " |" for row in table]) + "\n"
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *table)]
        text = "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *table]) + "\n"
    if args.output:
        from .checkpoint import atomic_write

        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))
    print(text, end="")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .model import LeNet5

    model = LeNet5(args.preset, seed=None)
    rows = model.summary()
    if args.json:
        print(json.dumps({"preset": args.preset, "layers": rows, "total_params": model.num_parameters()}))
        return 0
    print(f"{args.preset}: {model.preset.description}")
    print(f"{'layer':<9}{'kind':<28}{'output shape':<16}{'params':>8}")
    for r in rows:
        print(f"{r['name']:<9}{r['layer']:<28}{'x'.join(map(str, r['output_shape'])):<16}{r['params']:>8}")
    print(f"{'total':<53}{model.num_parameters():>8}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from . import datasets

    if args.data_command == "list":
        rows = [datasets.status(name) for name in datasets.DATASETS]
        if args.json:
            print(json.dumps(rows))
            return 0
        print(f"cache: {datasets.cache_root()}")
        for r in rows:
            where = f"{r['found']}: {r['path']}" if r["found"] else "not found (downloads on first use)"
            check = "" if not r["found"] else ("  checksums ok" if r["verified"] else
                                               "  checksums do NOT match the published ones (lenet5 data verify)")
            print(f"{r['name']:<14} {where}{check}")
        return 0
    if args.data_command == "download":
        path = datasets.download(args.name)
        print(path)
        return 0
    if args.data_command == "verify":
        r = datasets.status(args.name)
        if not r["found"]:
            raise Lenet5Error(f"{args.name}: not found in {r['path']} or any system location")
        for f, state in r["files"].items():
            print(f"{state:<8} {Path(r['path']) / f}")
        return 0 if r["verified"] else 1
    w = datasets.where(args.name)
    if args.json:
        print(json.dumps(w))
        return 0
    print(f"{args.name}: " + (f"found in {w['found']}" if w["found"] else "not found yet"))
    print("looked for, in this order:")
    print("  1. --data-dir DIR, when given (any directory with the four IDX files, plain or .gz)")
    for i, p in enumerate(w["places"], 2):
        print(f"  {i}. {p['kind']:<6} {p['path']}  ({'found' if p['found'] else 'missing'})")
    print(f"  {len(w['places']) + 2}. download from {', '.join(w['mirrors'])} into the cache")
    if w["sample"]:
        print(f"  {len(w['places']) + 3}. offline: the 5,000-image sample bundled with lenet5 ({w['sample']})")
    env = f"$LENET5_DATA is {w['lenet5_data']}" if w["lenet5_data"] else "$LENET5_DATA is not set"
    print(f"the cache is {w['cache_root']} ({env}; when set, it is the parent of one folder per dataset: "
          f"$LENET5_DATA/{args.name}, ...)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


# --------------------------------------------------------------------------- parser
def _engine_args(p, default: str | None = "numpy") -> None:
    p.add_argument("--engine", choices=["numpy", "torch"], default=default,
                   help="numpy (default) or the PyTorch replica (needs torch installed)")
    p.add_argument("--device", default=None if default is None else "cpu",
                   help="torch engine only: cpu, cuda, cuda:N or auto (default cpu)")


def _examples(*pairs: tuple[str, str]) -> str:
    """An epilog: 'examples:' and one command per line, with what it does beside it."""
    width = max(len(cmd) for cmd, _ in pairs) + 3
    return "examples:\n" + "\n".join(f"  {cmd:<{width}}{what}".rstrip() for cmd, what in pairs)


def _flag(key: str, value) -> str:
    value = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else f"{value:g}" if isinstance(
        value, float) else value
    return f"--{key.replace('_', '-')} {value}"


def _preset_only_defaults(p) -> dict:
    """The defaults of a preset's own options, read off its layers (never copied by hand)."""
    import numpy as np

    from .layers import Dropout

    out: dict = {}
    layers = dict(p.layers(np.dtype("float32")))
    if p.widen is not None:
        out["widths"] = tuple(int(layers[n].params["weight"].shape[0]) for n in ("c1", "c3", "c5"))
    drop = [layer.p for layer in layers.values() if isinstance(layer, Dropout)]
    if "dropout" in p.options and drop:
        out["dropout"] = float(drop[0])
    if "criterion" in p.options:
        out["criterion"] = p.criteria[0]
    return out


#: recipe options every preset's line shows; the others are shown where a recipe sets them
RECIPE_SHOWN = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augment")


def recipes_text(width: int = 100) -> str:
    """Each preset's recipe as the options it amounts to, from ``presets.PRESETS`` (for
    ``lenet5 train --help``)."""
    from .presets import PRESETS, TrainConfig

    base = TrainConfig().to_json()
    lines = ["each preset's recipe (what an unset option means; lenet5/presets.py):"]
    for name, p in PRESETS.items():
        values = {**base, **p.recipe}
        keys = [k for k in base if k in RECIPE_SHOWN or (k in p.recipe and k != "preset")]
        extra = _preset_only_defaults(p)
        if "criterion" in extra:
            extra["map_j"] = values["map_j"]
        lines += _wrap(name, [_flag(k, values[k]) for k in keys] + [_flag(k, v) for k, v in extra.items()], width)
    common = [_flag(k, base[k]) for k in ("momentum", "warmup_epochs", "weight_decay", "seed", "dtype", "val_split")]
    lines += _wrap("every preset", [*common, "(unless its recipe says otherwise)"], width)
    lines += _wrap("augment auto", [f"{n}: {info.auto_augment}," for n, info in _datasets().items()]
                   + ["unrecognised data: choose one"], width)
    return "\n".join(lines)


def _wrap(label: str, parts: list[str], width: int) -> list[str]:
    """``label`` then the parts, wrapped between parts (never inside '--flag value')."""
    lines, line = [], f"  {label:<14}"
    for part in parts:
        if len(line) + len(part) + 1 > width and line.strip() != label:
            lines.append(line.rstrip())
            line = " " * 16
        line += part + " "
    return lines + [line.rstrip()]


def _datasets() -> dict:
    from .datasets import DATASETS

    return DATASETS


TRAIN_EXAMPLES = _examples(
    ("lenet5 train", "seed-tanh on MNIST, downloaded on first use"),
    ("lenet5 train --preset modern --epochs 5", "the modern network, a short run"),
    ("lenet5 train --preset modern --data-dir DIR", "your IDX files, recognised by content"),
    ("lenet5 train --preset lecun1998 --distort", "the 1998 network, the paper's distortions"),
    ("lenet5 train --resume runs/RUN --epochs 40", "continue a stopped run, or train it on"))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .presets import DEFAULT_PRESET, PRESETS, TrainConfig
    from .augment import AUGMENTS
    from .datasets import DATASETS
    from .optim import OPTIMIZERS
    from .schedules import SCHEDULES
    from .train import TTA

    base = TrainConfig()
    parser = _Parser(prog="lenet5", description="LeNet-5 from scratch in NumPy: train it, look inside, "
                                                "recognise your own digits, measure its speed.",
                     epilog=_examples(
                         ("lenet5 predict --model modern digit.png", "recognise your own digit (pretrained)"),
                         ("lenet5 train", "train a network (MNIST, downloaded on first use)"),
                         ("lenet5 serve", "draw a digit in the browser and watch the network think"),
                         ("lenet5 COMMAND --help", "every option of a command, with examples")))
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and save it in a run directory",
                       description="Train a network with its preset's recipe; every option you set replaces one "
                                   "ingredient of it. Writes a new run directory: weights, metrics, figures.",
                       usage="lenet5 train [--preset NAME] [--epochs N] [--dataset NAME | --data-dir DIR] "
                             "[--out DIR] [OPTION ...]",
                       epilog_fn=lambda: recipes_text() + "\n\n" + TRAIN_EXAMPLES)
    # every training option defaults to None = unset: the preset's recipe fills it
    # (lenet5.presets.resolve), and a resumed run can tell what the user really asked for
    first = t.add_argument_group("start here")
    first.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help=f"the network and its recipe (default {DEFAULT_PRESET}; recipes below)")
    first.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="passes over the training set (recipe)")
    first.add_argument("--dataset", choices=list(DATASETS), default=None,
                       help=f"found in the cache or a system location, else downloaded (default {base.dataset}); "
                            "see lenet5 data path NAME")
    first.add_argument("--data-dir", metavar="DIR",
                       help="use the four MNIST-format IDX files in DIR instead; what they are is recognised "
                            "by their checksums")
    first.add_argument("--out", metavar="DIR", help="run directory (default: runs/<time>-<preset>, always new)")
    recipe = t.add_argument_group("recipe", "unset, each takes the preset's recipe (below)")
    recipe.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="images per step")
    recipe.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                        help="sdlm: lecun1998's second-order per-image method")
    recipe.add_argument("--lr", type=positive_float, default=None, help="(peak) learning rate")
    recipe.add_argument("--momentum", type=fraction, default=None, metavar="M", help="SGD momentum in [0, 1)")
    recipe.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")
    recipe.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="learning-rate schedule over the whole run")
    recipe.add_argument("--warmup-epochs", type=non_negative_float, default=None, metavar="E",
                        help="linear warm-up before the schedule (not with onecycle)")
    recipe.add_argument("--weight-decay", type=non_negative_float, default=None, metavar="W",
                        help="L2 (sgd, adam) or decoupled (adamw) weight decay")
    recipe.add_argument("--augment", choices=sorted([*AUGMENTS, "auto"]), default=None,
                        help="random distortions of the training images; auto follows the recognised dataset")
    recipe.add_argument("--distort", action=_Distort, nargs=0, default=False,
                        help="the 1998 paper's distortions (translation, scaling, squeezing, shear), one image in "
                             "ten left as it is: --augment lecun1998-pool")
    recipe.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                        help="train on N images drawn at random (seeded) from the training set")
    only = t.add_argument_group("one preset only", "defaults read off the preset (below)")
    only.add_argument("--widths", type=widths_list, default=None, metavar="C1,C3,C5",
                      help="modern: channels of C1, C3 and C5 (F6 stays 84)")
    only.add_argument("--dropout", type=fraction, default=None, metavar="P",
                      help="modern: dropout probability after C5 and F6")
    only.add_argument("--criterion", choices=["map", "mse"], default=None,
                      help="lecun1998: the paper's MAP criterion or ML/MSE")
    only.add_argument("--map-j", type=non_negative_float, default=None, metavar="J",
                      help="lecun1998: the MAP criterion's constant j")
    control = t.add_argument_group("run control")
    control.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    control.add_argument("--force-data", action="store_true",
                         help="with --resume: continue even though the data files changed")
    control.add_argument("--force", action="store_true",
                         help="reuse a non-empty --out (its earlier run files are removed)")
    control.add_argument("--seed", type=non_negative_int, default=None, metavar="S",
                         help=f"seed for init, shuffling and --train-limit (default {base.seed})")
    control.add_argument("--val-split", type=fraction, default=None, metavar="F",
                         help="hold out this fraction of the training set for validation; the best "
                              "validation epoch is kept as best.safetensors")
    control.add_argument("--no-test", dest="test_each_epoch", action="store_const", const=False, default=None,
                         help="do not evaluate the test set after each epoch (to choose a recipe on --val-split "
                              "without looking at it); no test figures either")
    control.add_argument("--dtype", choices=["float32", "float64"], default=None, help=f"default {base.dtype}")
    _engine_args(control, default=None)
    control.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    control.add_argument("--no-plots", action="store_true", help="do not draw the run's figures at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, loss and confusion matrix of a checkpoint on the test set",
                       description="Accuracy, loss, per-class accuracy and confusion matrix on a test set. A run's "
                                   "checkpoint is evaluated on the test files its run recorded, when they are still "
                                   "there unchanged (SHA-256); else on its dataset from the usual places.",
                       epilog=_examples(("lenet5 evaluate runs/RUN/model.safetensors", "on the run's own test files"),
                                        ("lenet5 evaluate --model modern", "a pretrained network on MNIST's test set"),
                                        ("lenet5 evaluate CKPT --data-dir DIR --json", "other files; one JSON object"),
                                        ("lenet5 evaluate CKPT --tta flip", "average each image with its mirror")))
    e.add_argument("checkpoint", type=Path, nargs="?", metavar="CHECKPOINT",
                   help="model.safetensors (or a notebook-style .npz); or --model NAME")
    e.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint (see lenet5 models)")
    e.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="this dataset's test set, from the usual places (default: the run's own test files)")
    e.add_argument("--data-dir", metavar="DIR", help="the test files in this directory instead")
    e.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="override the preset stored in the checkpoint")
    e.add_argument("--batch-size", type=positive_int, default=500, metavar="N",
                   help="images per forward pass (default 500; more takes more memory)")
    e.add_argument("--tta", choices=TTA, default="none",
                   help="test-time augmentation: 'flip' averages each image's outputs with its mirror's "
                        "(for mirror-symmetric classes such as Fashion-MNIST's, not for digits)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _engine_args(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="read digits and numbers in your own pictures: photos of paper, scans, "
                                        "drawings (PNG, JPEG, BMP, ...)", intermixed=True,
                        usage="%(prog)s [--model NAME | CKPT] [options] IMAGE...",
                        epilog=_examples(("lenet5 predict --model modern digit.png", "a pretrained network"),
                                         ("lenet5 predict --model modern photo-of-2026.jpg", "a whole number"),
                                         ("lenet5 predict runs/RUN/model.safetensors a.png b.jpg", "your own run"),
                                         ("lenet5 predict --model modern photo.jpg --show-input seen/",
                                          "also save every stage of reading it")))
    pr.add_argument("inputs", nargs="+", metavar="IMAGE", help="a checkpoint (unless --model), then pictures")
    pr.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint (see lenet5 models)")
    pr.add_argument("--top", type=positive_int, default=3, help="how many classes to show (default 3)")
    pr.add_argument("--single", action="store_true",
                    help="each picture holds one digit: all its writing is read as one (default: a number, "
                         "its digits left to right)")
    pr.add_argument("--show-input", metavar="DIR",
                    help="save every stage of reading each picture (<name>-<stage>.png; <name>-input.png is "
                         "what the network saw, the digits side by side)")
    pr.add_argument("--json", action="store_true",
                    help="print JSON: per picture its reading and every digit's box and probabilities")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write a trained network in another format (ONNX)",
                        epilog=_examples(("lenet5 export --model modern -o modern.onnx", "a pretrained network"),
                                         ("lenet5 export runs/RUN/model.safetensors -o m.onnx --test-data t/",
                                          "with test pairs")))
    ex.add_argument("checkpoint", type=Path, nargs="?", help="model.safetensors (unless --model)")
    ex.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint (see lenet5 models)")
    ex.add_argument("-o", "--output", type=Path, required=True, help="the file to write, e.g. model.onnx")
    ex.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--test-data", type=Path, metavar="DIR",
                    help="also write input/output tensor pairs (.pb) as the ONNX model zoo does")
    ex.add_argument("--test-sets", type=positive_int, default=3, help="how many pairs (default 3)")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="draw a digit in the browser, watch the network think, and train",
                        epilog=_examples(("lenet5 serve", "the pretrained networks, at http://127.0.0.1:8000"),
                                         ("lenet5 serve runs/RUN", "also a run of yours")))
    from . import web  # light: the server's own imports wait until it runs

    web.configure_parser(sv)
    sv.set_defaults(func=cmd_serve)

    mo = sub.add_parser("models", help="the pretrained models shipped with lenet5",
                        epilog=_examples(("lenet5 models", "name, preset, dataset, test accuracy"),
                                         ("lenet5 predict --model NAME digit.png", "use one")))
    mo.add_argument("--json", action="store_true", help="print one JSON object (name -> its manifest entry)")
    mo.set_defaults(func=cmd_models)

    pl = sub.add_parser("plot", help="draw a run's figures (curves, confusion, kernels, feature maps, mistakes)",
                        epilog=_examples(("lenet5 plot runs/RUN", "write the PNG files into the run directory"),
                                         ("lenet5 plot runs/RUN --sample 7", "feature maps of test image #7")))
    pl.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory of lenet5 train")
    pl.add_argument("--sample", type=non_negative_int, default=0, metavar="I",
                    help="test image whose feature maps to draw (default 0)")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("compare", help="a table of runs: preset, data, epochs, accuracy, time",
                       epilog=_examples(("lenet5 compare runs/*", "every run, side by side"),
                                        ("lenet5 compare runs/a runs/b --markdown --output t.md", "for a document")))
    c.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories of lenet5 train")
    c.add_argument("--markdown", action="store_true", help="a Markdown table")
    c.add_argument("--output", type=Path, metavar="FILE", help="also write the table to this file")
    c.add_argument("--json", action="store_true", help="print one JSON list, one object per run")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("summary", help="every layer's output shape and parameter count",
                       epilog=_examples(("lenet5 summary", f"the default network, {DEFAULT_PRESET}"),
                                        ("lenet5 summary --preset lecun1998", "the 1998 network: 60,000 parameters")))
    s.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help=f"the network (default {DEFAULT_PRESET})")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_summary)

    d = sub.add_parser("data", help="list, download, verify or locate datasets",
                       epilog=_examples(("lenet5 data list", "every dataset and where it is found"),
                                        ("lenet5 data path mnist", "where MNIST is looked for, in order"),
                                        ("lenet5 data download fashion-mnist", "into the cache, verified"),
                                        ("lenet5 data verify mnist", "re-check the checksums")))
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dl = dsub.add_parser("list", help="each dataset, where it is found, and whether its checksums match")
    dl.add_argument("--json", action="store_true", help="print one JSON list")
    for verb, text in [("download", "download into the cache (verified)"),
                       ("verify", "re-check the checksums of the copy that would be used"),
                       ("path", "where the dataset is looked for, in order, and where it is found")]:
        p = dsub.add_parser(verb, help=text, description=text)
        p.add_argument("name", choices=list(DATASETS), help="the dataset: " + ", ".join(DATASETS))
        if verb == "path":
            p.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=cmd_data)

    b = sub.add_parser("bench", help="training and inference speed: the NumPy engine vs every installed peer "
                                     "(PyTorch, torch.compile, JAX, ONNX Runtime)",
                       description="Training and inference speed of the NumPy engine and every installed peer "
                                   "(PyTorch, torch.compile, JAX, ONNX Runtime) on the same batches, on this CPU "
                                   "(named, with its vector extensions, in the first line).",
                       epilog=_examples(("lenet5 bench", "batch 64, the default network"),
                                        ("lenet5 bench --batch-sizes 16,64,256", "three batch sizes"),
                                        ("lenet5 bench --profile", "each layer's share of a training step"),
                                        ("lenet5 bench --json > bench.json", "everything, machine-readable")))
    b.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help=f"the network (default {DEFAULT_PRESET})")
    b.add_argument("--batch-sizes", type=batch_sizes, default="64", metavar="N,N,...",
                   help=f"training batch sizes, comma-separated (default 64), e.g. 1,16,64,256,1024 "
                        f"(each at most {MAX_BENCH_BATCH:,})")
    b.add_argument("--steps", type=positive_int, default=100, metavar="N",
                   help="training steps per repetition (default 100)")
    b.add_argument("--repeats", type=positive_int, default=5, metavar="N",
                   help="interleaved repetitions per engine (default 5)")
    b.add_argument("--infer-images", type=infer_images, default=10000, metavar="N",
                   help=f"images per inference measurement (default 10000, at most {MAX_INFER_IMAGES:,})")
    b.add_argument("--profile", action="store_true", help="per-layer forward/backward time of a training step")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # anywhere on the line: show the traceback of an unexpected failure
    argv = [a for a in argv if a != "--debug"]
    from .errors import os_error

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
            if args.command == "data" and args.data_command is None:
                parser.parse_args(["data", "--help"])
        except SystemExit as e:  # a bad argument (its one line is printed) or --help
            return e.code if isinstance(e.code, int) else 2
        if args.command is None:  # bare `lenet5`: the overview, not an error
            parser.print_help()
            return 0
        # floating-point trouble is checked where it matters (a loss that diverges, weights and
        # outputs that are not finite) and reported as one line: no RuntimeWarnings beside it
        with np.errstate(all="ignore"):
            return args.func(args)
    except Lenet5Error as e:
        print(f"lenet5: error: {clip(e, 400)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lenet5: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lenet5 ... | head`
        return 0
    except OSError as e:  # a file-system refusal no reader foresaw: still the path and the reason
        if debug:
            raise
        print(f"lenet5: error: {clip(os_error(None, e), 400)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen input: still one line, unless --debug
        if debug:
            raise
        print(f"lenet5: error: unexpected {type(e).__name__}: {clip(e, 300)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
