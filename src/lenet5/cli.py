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

from .errors import Lenet5Error


# --------------------------------------------------------------------------- argument types
def _number(cast, ok, requirement: str):
    """An argparse type: parse with ``cast``, then insist on ``ok(value)``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if cast is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    return parse


positive_int = _number(int, lambda v: v >= 1, ">= 1")


def widths_list(text: str) -> tuple[int, ...]:
    """An argparse type: 'C1,C3,C5' -> integers (how many and how large: presets.check_widths)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers C1,C3,C5, got {text!r}") from None
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
fraction = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Parse and delegate: the options the user set become the run's TrainConfig overrides."""
    from .presets import CONFIG_FIELDS
    from .session import train

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
    from .datasets import DATASETS, load_dataset, load_recorded_test

    def say(message: str) -> None:
        print(f"lenet5: {message}", file=sys.stderr)

    recorded = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    trained_on = recorded.get("dataset")
    if args.data_dir is None and args.dataset is None and recorded:
        test, why_not = load_recorded_test(recorded)
        if test is not None:
            say(f"evaluating on the run's own test files in {recorded['directory']} (SHA-256 as recorded)")
            described = {**recorded, "test_size": len(test)}
            return trained_on, test, described
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

    model, meta, label = _load_model(args.checkpoint, args.model, args.preset)
    if args.engine == "torch":
        from .torch_replica import TorchModel

        weights = model.state_dict()
        model = TorchModel.from_spec(model.spec, seed=None, device=args.device)
        model.load_state_dict(weights)
    name, test, described = _evaluation_data(args, meta)
    start = time.perf_counter()
    result = evaluate(model, test, args.batch_size, tta=args.tta)
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


def cmd_predict(args: argparse.Namespace) -> int:
    from .losses import probabilities
    from .predict import prepare_files, save_inputs

    inputs = list(args.inputs)
    checkpoint = None if args.model else Path(inputs.pop(0))
    if not inputs:
        raise Lenet5Error("no picture given: lenet5 predict CKPT IMAGE... (or --model NAME IMAGE...)")
    model, _, _ = _load_model(checkpoint, args.model)
    args.images = inputs
    images = prepare_files(args.images)
    logits = model.infer(images)
    probs = probabilities(model.preset.output, logits)
    rbf = model.preset.output == "rbf"  # outputs are minus the RBF distances
    if args.show_input:
        save_inputs(images, args.images, args.show_input)
    results = []
    for path, p in zip(args.images, probs):
        order = np.argsort(-p)[: args.top]
        results.append({"image": str(path), "prediction": int(order[0]),
                        "top": [{"class": int(c), "probability": float(p[c])} for c in order],
                        "probabilities": [float(v) for v in p]})
        if rbf:
            results[-1]["rbf_distances"] = [float(-v) for v in logits[len(results) - 1]]
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        tops = "  ".join(f"{t['class']} ({100 * t['probability']:.1f}%"
                         + (f", RBF distance {r['rbf_distances'][t['class']]:.1f})" if rbf else ")")
                         for t in r["top"])
        print(f"{r['image']}: {r['prediction']}    top: {tops}")
    return 0


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
    table = [[r["run"], r["preset"], r["dataset"], f"{r['train_size']:,}", str(r["epochs"]), r["augment"],
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
def _engine_args(p: argparse.ArgumentParser, default: str | None = "numpy") -> None:
    p.add_argument("--engine", choices=["numpy", "torch"], default=default,
                   help="numpy (default) or the PyTorch replica (needs torch installed)")
    p.add_argument("--device", default=None if default is None else "cpu",
                   help="torch engine only: cpu, cuda, cuda:N or auto (default cpu)")


def build_parser() -> argparse.ArgumentParser:
    from .presets import DEFAULT_PRESET, PRESETS
    from .augment import AUGMENTS
    from .datasets import DATASETS
    from .optim import OPTIMIZERS
    from .schedules import SCHEDULES
    from .train import TTA

    parser = _Parser(prog="lenet5", description="LeNet-5 in NumPy: train, evaluate, benchmark.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and save it in a run directory")
    # every training option defaults to None = unset: the preset's recipe fills it
    # (lenet5.presets.resolve), and a resumed run can tell what the user really asked for
    t.add_argument("--preset", choices=sorted(PRESETS), default=None, help=f"network (default {DEFAULT_PRESET})")
    t.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="found in the cache or a system location, else downloaded (default mnist)")
    t.add_argument("--data-dir", help="use the four MNIST-format IDX files in this directory instead")
    t.add_argument("--epochs", type=positive_int, default=None, help="default 10 (modern: 30, lecun1998: 20)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="default 64 (lecun1998: 1)")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="default sgd (seed-sigmoid: adam, modern: adamw, lecun1998: sdlm)")
    t.add_argument("--lr", type=positive_float, default=None, help="(peak) learning rate, default 0.1 (modern: 0.003)")
    t.add_argument("--momentum", type=fraction, default=None, help="SGD momentum in [0, 1) (default 0)")
    t.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")
    t.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule over the whole run (default cosine decay to 0; modern: onecycle)")
    t.add_argument("--warmup-epochs", type=non_negative_float, default=None,
                   help="linear warm-up before the schedule (not with onecycle; default 0)")
    t.add_argument("--weight-decay", type=non_negative_float, default=None, help="default 0 (modern: 0.05)")
    t.add_argument("--augment", choices=sorted([*AUGMENTS, "auto"]), default=None,
                   help="random distortions of training images: none (default), affine, elastic, flip, lecun1998, "
                        "lecun1998-pool; "
                        "auto (modern's default): flip for fashion-mnist, affine otherwise")
    t.add_argument("--distort", action="store_const", const="lecun1998-pool", dest="augment",
                   help="the 1998 paper's distortions (translation, scaling, squeezing, shear), one image in ten "
                        "left as it is, as from its pool of originals and distortions: --augment lecun1998-pool")
    t.add_argument("--dropout", type=fraction, default=None, help="modern only: dropout probability (default 0.1)")
    t.add_argument("--widths", type=widths_list, default=None, metavar="C1,C3,C5",
                   help="modern only: channels of C1, C3, C5 (default LeNet-5's 6,16,120)")
    t.add_argument("--criterion", choices=["map", "mse"], default=None,
                   help="lecun1998 only: the paper's MAP criterion (default) or ML/MSE")
    t.add_argument("--map-j", type=non_negative_float, default=None,
                   help="lecun1998 only: the MAP criterion's constant j (default 0.1)")
    t.add_argument("--seed", type=non_negative_int, default=None, help="seed for init, shuffling and --train-limit "
                                                                       "(default 0)")
    t.add_argument("--train-limit", type=positive_int, default=None,
                   help="train on N images drawn at random (seeded) from the training set")
    t.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default float32")
    t.add_argument("--val-split", type=fraction, default=None,
                   help="hold out this fraction of the training set for validation; the best "
                        "validation epoch is kept as best.safetensors")
    t.add_argument("--no-test", dest="test_each_epoch", action="store_const", const=False, default=None,
                   help="do not evaluate the test set after each epoch (to choose a recipe on --val-split "
                        "without looking at it); no test figures either")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    t.add_argument("--force-data", action="store_true",
                   help="with --resume: continue even though the data files changed")
    t.add_argument("--out", help="run directory (default: runs/<time>-<preset>, always new)")
    t.add_argument("--force", action="store_true", help="reuse a non-empty --out (its earlier run files are removed)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    t.add_argument("--no-plots", action="store_true", help="do not draw the run's figures at the end")
    _engine_args(t, default=None)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, loss and confusion matrix of a checkpoint on the test set")
    e.add_argument("checkpoint", type=Path, nargs="?", help="model.safetensors (or a notebook-style .npz)")
    e.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint (see lenet5 models)")
    e.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="default: the dataset the checkpoint was trained on")
    e.add_argument("--data-dir", help="use the IDX files in this directory instead")
    e.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="override the preset stored in the checkpoint")
    e.add_argument("--batch-size", type=positive_int, default=500)
    e.add_argument("--tta", choices=TTA, default="none",
                   help="test-time augmentation: 'flip' averages each image's outputs with its mirror's "
                        "(for mirror-symmetric classes such as Fashion-MNIST's, not for digits)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _engine_args(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify your own pictures of digits (PNG, JPEG, BMP, ...)")
    pr.add_argument("inputs", nargs="+", metavar="[CKPT] IMAGE", help="a checkpoint (unless --model), then pictures")
    pr.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint (see lenet5 models)")
    pr.add_argument("--top", type=positive_int, default=3, help="how many classes to show (default 3)")
    pr.add_argument("--show-input", metavar="DIR", help="save the 28x28 image the network saw, per picture")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write a trained network in another format (ONNX)")
    ex.add_argument("checkpoint", type=Path, nargs="?", help="model.safetensors (unless --model)")
    ex.add_argument("--model", metavar="NAME", help="pretrained weights instead of a checkpoint")
    ex.add_argument("-o", "--output", type=Path, required=True, help="the file to write, e.g. model.onnx")
    ex.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--test-data", type=Path, metavar="DIR",
                    help="also write input/output tensor pairs (.pb) as the ONNX model zoo does")
    ex.add_argument("--test-sets", type=positive_int, default=3, help="how many pairs (default 3)")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="draw a digit in the browser, watch the network think, and train")
    from . import web  # light: the server's own imports wait until it runs

    web.configure_parser(sv)
    sv.set_defaults(func=cmd_serve)

    mo = sub.add_parser("models", help="the pretrained models shipped with lenet5")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_models)

    pl = sub.add_parser("plot", help="draw a run's figures (curves, confusion, kernels, feature maps, mistakes)")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--sample", type=int, default=0, help="test image whose feature maps to draw (default 0)")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("compare", help="a table of runs: preset, data, epochs, accuracy, time")
    c.add_argument("run_dirs", nargs="+", type=Path)
    c.add_argument("--markdown", action="store_true", help="a Markdown table")
    c.add_argument("--output", type=Path, help="also write the table to this file")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("summary", help="every layer's output shape and parameter count")
    s.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_summary)

    d = sub.add_parser("data", help="list, download, verify or locate datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
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
                                     "(PyTorch, torch.compile, JAX, ONNX Runtime)")
    b.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    b.add_argument("--batch-sizes", default="64", help="comma-separated, e.g. 1,16,64,256,1024")
    b.add_argument("--steps", type=positive_int, default=100, help="training steps per repetition")
    b.add_argument("--repeats", type=positive_int, default=5, help="interleaved repetitions per engine")
    b.add_argument("--infer-images", type=positive_int, default=10000)
    b.add_argument("--profile", action="store_true", help="per-layer forward/backward time of a training step")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # anywhere on the line: show the traceback of an unexpected failure
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Lenet5Error as e:
        print(f"lenet5: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lenet5: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lenet5 ... | head`
        return 0
    except Exception as e:  # a bug or an unforeseen input: still one line, unless --debug
        if debug:
            raise
        print(f"lenet5: error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
