"""CLI commands on Keras models and zip directories: train-reference, zip, sweep, evaluate.

Each handler hands its parsed arguments to one function of mtz_mobile.api and prints the
result; the zip settings are derived from ZipConfig (``options.add_dataclass_options``).
"""

from __future__ import annotations

import argparse
import json

from converters.dry_run import ConversionCheck
from mtz_mobile.reference import ARCHITECTURES, LENET_300_100
from mtz_mobile.zipper.config import DEFAULT_LEVELS, BudgetSearch, ZipConfig

from .options import (add_data_dir, add_data_options, add_dataclass_options, add_quiet, api_kwargs, command,
                      float_list, int_list, name_list)


def add_commands(sub) -> None:
    p = command(sub, "train-reference", "train reference models on Fashion-MNIST (default: two LeNet-300-100, "
                                        "different seeds, hidden units permuted)", _train_reference)
    p.add_argument("--out", dest="out_dir", metavar="OUT", required=True,
                   help="directory for a.keras, b.keras and reference.json")
    add_data_options(p, what="per model or one for both")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per model (the maximum with "
                                                         "--early-stopping)")
    # plain int and float: the API's MTZError names a bad value and its fix, for the CLI and notebooks alike
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop a model once its validation error has not improved for PATIENCE epochs and "
                        "keep its best epoch's weights")
    p.add_argument("--validation-split", type=float, default=0.1, metavar="F",
                   help="with --early-stopping: the fraction of each class's training data held out (the "
                        "zipper's hold-out: seed 0) to measure the validation error, unless the data has a "
                        "validation set of its own; the test set is never used")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    p.add_argument("--seeds", type=int_list, default=[1, 2], help="one seed per model, comma-separated")
    p.add_argument("--arch", choices=ARCHITECTURES, default="mlp",
                   help="the network to train: mlp is lenet300 (LeNet-300-100 unless --hidden says otherwise), "
                        "lenet5 Caffe's, resnet a small one, the others Keras applications")
    p.add_argument("--hidden", type=int_list, default=list(LENET_300_100), help="hidden widths of the mlp")
    p.add_argument("--overwrite", action="store_true", help="replace models already in --out")
    # Keras' one line per epoch is progress the user waits for, not library noise
    p.set_defaults(verbose=2)

    p = command(sub, "zip", "zip two or more trained .keras or .onnx models (Algorithm 1 + light retraining)", _zip)
    add_zip_inputs(p, out_help="output directory (plan.json, weights.npz, sources/)", models_nargs="*")
    add_dataclass_options(p, ZipConfig)
    add_dataclass_options(p, BudgetSearch)
    add_dataclass_options(p, ConversionCheck)
    p.add_argument("--from-sweep", metavar="DIR", help="zip a point of this sweep again, bit for bit (no models "
                                                       "or zip options: the sweep fixes them)")
    p.add_argument("--point", type=_point, metavar="K", help="with --from-sweep: the point (frontier.md's first "
                                                             "column), or best: the most shared within the budget")
    p.add_argument("--resume", action="store_true", help="continue an interrupted zip from its last finished layer")
    p.add_argument("--overwrite", action="store_true", help="replace a finished zip in --out")
    add_quiet(p)

    p = command(sub, "sweep", "zip at a grid of sharing levels and write the sharing-vs-error frontier "
                              "(validation bound and test error per task) as CSV, Markdown and PNG", _sweep)
    add_zip_inputs(p, out_help="output directory (sweep.json, frontier.csv/.md/.png, sources/)")
    add_dataclass_options(p, ZipConfig)
    p.add_argument("--levels", type=float_list, default=list(DEFAULT_LEVELS),
                   help="fractions of every hidden layer's units to share, comma-separated")
    p.add_argument("--alphas", type=float_list, metavar="A[,A…]",
                   help="repeat the levels for each weight α of the first task against the second, comma-separated "
                        "(default: --alpha only); the task whose features serve both (e.g. the finer labels) may "
                        "want most of the weight")
    p.add_argument("--budget", type=float, metavar="PP", help="mark the points whose bound on every task's "
                                                              "validation error increase is within PP")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its last point")
    p.add_argument("--overwrite", action="store_true", help="replace a finished sweep in --out")
    add_quiet(p)

    p = command(sub, "evaluate", "per-task test error of the originals and of the zipped network", _evaluate)
    p.add_argument("path", metavar="zipdir", help="a directory written by zip")
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_zip_inputs(p, out_help: str, models_dest: str = "model_paths", models_nargs: str = "+") -> None:
    """The models, --out, --names and data options that zip, sweep and deploy share."""
    p.add_argument(models_dest, metavar="models", nargs=models_nargs, help="the trained .keras or .onnx (NCHW, from torch.onnx.export) models")
    p.add_argument("--out", dest="out_dir", metavar="OUT", required=True, help=out_help)
    p.add_argument("--names", type=name_list, help="task names, comma-separated (default: file stems)")
    add_data_options(p)
    p.add_argument("--expected-error", dest="expected_errors", type=float_list, metavar="PCT[,PCT…]",
                   help="each original's error in percent as you know it (one per model or one for all): before any "
                        "work an original far above it is refused (default: reference.json beside the model, and "
                        "always near chance)")


def _point(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is a number from frontier.md's first column or best, "
                                         f"got {text!r}") from None


def _train_reference(args) -> int:
    from mtz_mobile import api

    for r in api.train_reference(**api_kwargs(args)):
        print(f"{r.path}: test error {100 * r.test_error:.2f} % after {r.iterations} iterations (seed {r.seed})")
        if r.best_epoch is not None:
            print(f"  early stopping: {r.epochs_run} of at most {r.epochs} epochs, best epoch {r.best_epoch}, "
                  f"validation error {100 * r.validation_error:.2f} % on {r.validation_images} images "
                  f"({r.validation_source})")
    return 0


def _zip(args) -> int:
    from mtz_mobile import api

    result = api.zip_models(**api_kwargs(args))
    p = result.plan.params
    for layer in result.plan.layers:
        print(f"{layer.name}: {layer.newcomer}'s {layer.n_new} units, {layer.n_shared} shared with the "
              f"{layer.n_existing} of the joint network, "
              f"{layer.retrain.get('iterations', 0)} retraining iterations, {layer.seconds:.1f} s")
    print(f"parameters: {p['per_task']} separately, {p['zipped']} zipped; shared fraction "
          f"{100 * p['shared_fraction']:.2f} % ({p['shared_fraction_definition']})")
    for t, v in result.plan.validation.items():
        print(f"validation {t}: error increase {v['point_pp']:+.2f} pp, at most {v['upper_pp']:+.2f} pp at "
              f"{100 * v['confidence']:g} % confidence ({v['images']} images)")
    if args.from_sweep is not None:
        print(f"point {args.point} of {args.from_sweep} zipped again: its weights equal the sweep's bit for bit")
    if args.budget is not None:
        from mtz_mobile.zipper.budget import frontier_dir

        print(f"the most shared zip certified within {args.budget:g} pp (α = {result.plan.config().alpha:g}); "
              f"the search's frontier: {frontier_dir(args.out_dir)}/frontier.md")
    print(f"wrote {args.out_dir}")
    return 0


def _sweep(args) -> int:
    from mtz_mobile import api
    from mtz_mobile.zipper.frontier import frontier_markdown

    state = api.sweep_models(**api_kwargs(args))
    print(frontier_markdown(state))
    print(f"wrote {args.out_dir} (frontier.csv, frontier.md, frontier.png)")
    return 0


def _evaluate(args) -> int:
    from mtz_mobile import api

    results = api.evaluate(**api_kwargs(args, "json"))
    print(json.dumps(api.evaluation_json(results), indent=1) if args.json else api.evaluation_table(results))
    return 0
