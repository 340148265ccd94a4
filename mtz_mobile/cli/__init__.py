"""`mtz-mobile` — the command line, a thin layer over mtz_mobile.api."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mtz_mobile.errors import MTZError


def _sharing_list(text: str) -> list:
    """'all' | '300' | '0.5' | '300,100' → per-layer values (int = count, float = fraction)."""
    out = []
    for token in text.split(","):
        token = token.strip()
        if token == "all":
            out.append("all")
            continue
        try:
            out.append(float(token) if "." in token else int(token))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{token!r} is not 'all', a count or a fraction") from None
    return out


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def build_parser() -> argparse.ArgumentParser:
    from mtz_mobile import __version__

    parser = argparse.ArgumentParser(prog="mtz-mobile", description="Zip trained networks for correlated tasks "
                                     "into one multi-task network (Multi-Task Zipping).")
    parser.add_argument("--version", action="version", version=f"mtz-mobile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-reference", help="train reference models on Fashion-MNIST (default: two "
                                               "LeNet-300-100, different seeds, hidden units permuted)")
    p.add_argument("--out", required=True, help="directory for a.keras, b.keras and reference.json")
    p.add_argument("--data", action="append", help="data spec per model (default fashion-mnist for both)")
    p.add_argument("--data-dir", help="directory with Fashion-MNIST's *-idx?-ubyte.gz files")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    p.add_argument("--arch", choices=["mlp", "lenet5", "resnet"], default="mlp",
                   help="mlp (LeNet-300-100 by default), lenet5 (Caffe's, 431K parameters) or a small resnet")
    p.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[300, 100],
                   help="hidden widths of the mlp")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("zip", help="zip two or more trained .keras models (Algorithm 1 + light retraining)")
    p.add_argument("models", nargs="+", help="the trained .keras models")
    p.add_argument("--out", required=True, help="output directory (plan.json, weights.npz, sources/)")
    p.add_argument("--names", type=lambda s: s.split(","), help="task names, comma-separated (default: file stems)")
    p.add_argument("--data", action="append", help="data spec per model or one for all: fashion-mnist, "
                                                  "fashion-mnist-coarse, npz:PATH (default fashion-mnist)")
    p.add_argument("--data-dir", help="directory with Fashion-MNIST's *-idx?-ubyte.gz files")
    p.add_argument("--shared", type=_sharing_list, default=["all"],
                   help="units to share per hidden layer: all, a count or a fraction, one value or one per layer")
    p.add_argument("--threshold", type=_float_list, help="share the pairs with d < ε instead (one ε or one per layer)")
    p.add_argument("--max-error-increase", type=float, metavar="PP",
                   help="adaptive: per layer, the largest sharing whose validation error (after light retraining) "
                        "rises at most PP percentage points for every task")
    p.add_argument("--validation-samples", type=int, default=5000,
                   help="test images held out for the adaptive search (evaluate reports on the rest)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of task A in Hessians and loss (0 < α < 1)")
    p.add_argument("--task-weights", type=_float_list, help="with three or more tasks: one weight per task")
    p.add_argument("--damping", type=float, default=1e-4, help="λ relative to mean(diag(H_A + H_B))")
    p.add_argument("--method", choices=["mtz", "random"], default="mtz",
                   help="mtz: Hessian metric and optimal merge; random: the paper's baseline")
    p.add_argument("--pairing", choices=["exact", "greedy"], default="exact")
    p.add_argument("--compensation", choices=["next-layer", "none"], default="next-layer",
                   help="refit each task's next layer by least squares after a merge (none = the paper's method)")
    p.add_argument("--calibration-samples", type=int, default=10000, help="training images per task for the Hessians")
    p.add_argument("--max-instances", type=int, default=500_000,
                   help="cap on Hessian instances per task and layer (a conv layer has one per output position)")
    p.add_argument("--sparse-mask", choices=["larger", "union"], default="larger",
                   help="a merged sparse unit keeps the mask with more connections (the paper) or both masks")
    p.add_argument("--sparse", choices=["auto", "on", "off"], default="auto",
                   help="treat zero weights as pruned connections (auto: when at least 25%% of the weights are zero)")
    p.add_argument("--retrain-iterations", type=int, default=100, help="joint steps after each zipped layer")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight of the original models' soft targets in each task's retraining loss "
                        "(0: labels only, the paper's loss)")
    p.add_argument("--strategy", choices=["default", "mirrored"], default="default",
                   help="mirrored: tf.distribute.MirroredStrategy over every visible device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted zip from its last finished layer")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("convert", help="convert a zip directory to one .tflite: a signature per task, shared "
                                       "blocks stored once, manifest embedded")
    p.add_argument("zipdir")
    p.add_argument("--out", required=True, help="output .tflite")
    p.add_argument("--quantize", choices=["none", "fp16", "dynamic-int8", "int8"], default="none")
    p.add_argument("--joint", action="store_true", help="also an 'all' signature returning every task's output")
    p.add_argument("--baselines", action="store_true",
                   help="also export each original model as OUT_STEM.baseline_TASK.tflite")
    p.add_argument("--data-dir", help="Fashion-MNIST location (int8 calibration data)")

    p = sub.add_parser("inspect", help="list a .tflite's signatures, buffers and who uses them, and its manifest")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")

    from .device_commands import add_device_commands

    COMMANDS.update(add_device_commands(sub))

    p = sub.add_parser("evaluate", help="per-task test error of the originals and of the zipped network")
    p.add_argument("zipdir")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _zip(args) -> int:
    from mtz_mobile import api

    result = api.zip_models(
        args.models, out_dir=args.out, data=args.data or "fashion-mnist", names=args.names, data_dir=args.data_dir,
        resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        shared=args.shared, threshold=args.threshold, alpha=args.alpha, damping=args.damping, method=args.method,
        pairing=args.pairing, compensation=args.compensation, calibration_samples=args.calibration_samples,
        max_error_increase=args.max_error_increase, validation_samples=args.validation_samples,
        task_weights=args.task_weights, max_instances=args.max_instances, sparse=args.sparse,
        sparse_mask=args.sparse_mask,
        seed=args.seed, retrain_iterations=args.retrain_iterations, retrain_batch_size=args.batch_size,
        retrain_learning_rate=args.learning_rate, retrain_strategy=args.strategy,
        retrain_distill=args.distill)
    p = result.plan.params
    for layer in result.plan.layers:
        print(f"{layer.name}: {layer.newcomer}'s {layer.n_new} units, {layer.n_shared} shared with the "
              f"{layer.n_existing} of the joint network, "
              f"{layer.retrain.get('iterations', 0)} retraining iterations, {layer.seconds:.1f} s")
    print(f"parameters: {p['per_task']} separately, {p['zipped']} zipped; shared fraction "
          f"{100 * p['shared_fraction']:.2f} % ({p['shared_fraction_definition']})")
    print(f"wrote {args.out}")
    return 0


def _train_reference(args) -> int:
    from mtz_mobile import api

    records = api.train_reference(args.out, data=args.data or "fashion-mnist", seeds=tuple(args.seeds),
                                  epochs=args.epochs, batch_size=args.batch_size, data_dir=args.data_dir,
                                  overwrite=args.overwrite, verbose=2, arch=args.arch, hidden=args.hidden)
    for r in records:
        print(f"{r.path}: test error {100 * r.test_error:.2f} % after {r.iterations} iterations (seed {r.seed})")
    return 0


def _evaluate(args) -> int:
    from mtz_mobile import api

    results = api.evaluate(args.zipdir, data_dir=args.data_dir)
    print(json.dumps(api.evaluation_json(results), indent=1) if args.json else api.evaluation_table(results))
    return 0


def _convert(args) -> int:
    from converters import convert_zip

    result = convert_zip(args.zipdir, args.out, quantize=args.quantize, joint=args.joint, baselines=args.baselines,
                         data_dir=args.data_dir)
    lay = result.layout
    print(f"wrote {result.path}: {lay.file_bytes:,} bytes, weights {lay.weight_bytes:,} bytes of which "
          f"{lay.shared_weight_bytes:,} shared by the task signatures; every shared block is one buffer")
    for task, path in result.baselines.items():
        print(f"baseline {task}: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _inspect(args) -> int:
    from converters.inspection import format_inspection, inspect_model

    info = inspect_model(args.model)
    print(json.dumps(info, indent=1) if args.json else format_inspection(info))
    return 0


COMMANDS = {"zip": _zip, "train-reference": _train_reference, "evaluate": _evaluate, "convert": _convert,
            "inspect": _inspect}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MTZError as exc:
        print(f"mtz-mobile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmtz-mobile: interrupted; a zip continues with the same arguments and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
