"""The Python API the CLI is a thin layer over; usable the same way from a notebook::

    from mtz_mobile import api
    refs = api.train_reference("refs/")                  # two LeNet-300-100 on Fashion-MNIST
    result = api.zip_models(["refs/a.keras", "refs/b.keras"], out_dir="zipped/",
                            retrain_iterations=90)
    print(api.evaluation_table(api.evaluate("zipped/")))
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .backend import activate
from .data import TaskData, load_specs, specs_for
from .errors import MTZError
from .flat_options import flat_fields, from_flat
from .graph.model_files import read_model
from .preflight import checked_data
from .reference import train_reference_pair
from .zipper.config import BudgetSearch, ZipConfig
from .zipper.evaluate import evaluate_dir as evaluate, evaluation_json, evaluation_table  # noqa: F401 (re-export)
from .zipper.presets import reference_iterations_beside
from .zipper.run import ZipResult, zip_networks
from .zipper.sweep import DEFAULT_LEVELS, load_sweep, reproduce_point, sweep

# every zip setting's flat keyword: ``alpha``, ``retrain_iterations`` (ZipConfig.retrain.iterations), …
ZIP_OPTIONS = frozenset(key for key, _, _ in flat_fields(ZipConfig))
# ``budget``, ``levels``, ``alphas``: zip_models' budget search (zipper.budget)
SEARCH_OPTIONS = frozenset(key for key, _, _ in flat_fields(BudgetSearch))


def task_names(paths: list[str], names: list[str] | None = None) -> list[str]:
    """Task names (also the LiteRT signature keys): given, else the file stems made identifiers."""
    if names is not None:
        if len(names) != len(paths):
            raise MTZError(f"{len(names)} names for {len(paths)} models: give one name per model")
        out = list(names)
    else:
        out = [re.sub(r"\W", "_", Path(p).stem) or "task" for p in paths]
        seen: dict[str, int] = {}
        for n, name in enumerate(out):
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                out[n] = f"{name}_{seen[name]}"
    for name in out:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name == "all":
            raise MTZError(f"task name {name!r} is not usable as a signature key: use letters, digits and _, not 'all'")
    if len(set(out)) != len(out):
        raise MTZError(f"task names repeat ({', '.join(out)}): give distinct --names")
    return out


def config_from_options(options: dict) -> ZipConfig:
    """The ZipConfig that the zip settings among ``options`` describe (``alpha=0.3``,
    ``retrain_iterations=7``, …; see ZIP_OPTIONS); other keys are ignored, so a whole
    ``vars(args)`` of the CLI can be given. Absent settings keep their defaults."""
    return from_flat(ZipConfig, options)


def make_config(**options) -> ZipConfig:
    """A ZipConfig from flat keyword options only; a misspelt one is an error, not ignored."""
    unknown = set(options) - ZIP_OPTIONS
    if unknown:
        raise MTZError(f"unknown zip option(s) {', '.join(sorted(unknown))}")
    return config_from_options(options)


def zip_models(model_paths: list[str | os.PathLike], out_dir: str | os.PathLike | None = None,
               data: str | list[str] | dict[str, TaskData] = "fashion-mnist", names: list[str] | None = None,
               data_dir: str | os.PathLike | None = None, config: ZipConfig | None = None, resume: bool = False,
               overwrite: bool = False, progress: bool = True, from_sweep: str | os.PathLike | None = None,
               point: int | str | None = None, expected_errors=None, dry_run: bool = True,
               **options) -> ZipResult:
    """Zip trained models (.keras, or .onnx as torch.onnx.export writes them). ``data`` is one spec for all tasks, one per model, or loaded data.
    ``from_sweep=DIR, point=K`` zips point K of a sweep again instead (its models, data and settings);
    ``point="best"``: the one sharing the most among those within the sweep's budget.
    Before any work the data's shapes and the originals' errors on it are checked (``preflight``;
    ``expected_errors``: the originals' errors in percent, when the user knows them). ``dry_run``:
    first convert the fully shared structure (``converters.check_convertible``, seconds), so a graph
    that cannot become one file is refused before the data are even read."""
    search, options = split_search(options)
    if from_sweep is not None or point is not None:
        if search is not None:
            raise MTZError("--budget searches anew and --from-sweep zips a finished search's point: give one")
        return _zip_sweep_point(model_paths, from_sweep, point, out_dir, data, data_dir, config, overwrite, progress,
                                options)
    paths = [str(p) for p in model_paths]
    tasks = task_names(paths, names)
    config = start_distribution(_config(config, options, paths))
    models = {t: read_model(p) for t, p in zip(tasks, paths)}
    if dry_run and not resume:   # a partial zip passed it when it started
        from converters.dry_run import check_convertible

        check_convertible(models)
    datas = checked_data(models, data, tasks, data_dir, config.validation_split, progress, expected_errors,
                         budget_pp=search.budget if search is not None else config.max_error_increase,
                         confidence=config.confidence)
    if search is not None:
        from .zipper.budget import zip_within_budget

        return zip_within_budget(models, datas, config, search, out_dir, resume=resume,
                                 overwrite=overwrite, progress=progress)[0]
    return zip_networks(models, datas, config, out_dir, resume=resume,
                        overwrite=overwrite, progress=progress)


def split_search(options: dict) -> tuple[BudgetSearch | None, dict]:
    """The budget search among flat ``options`` (None without a budget) and the other options."""
    search = from_flat(BudgetSearch, options)
    rest = {k: v for k, v in options.items() if k not in SEARCH_OPTIONS}
    if search.budget is None:
        if search != BudgetSearch():
            raise MTZError("--levels and --alphas steer a budget search: give --budget PP as well")
        return None, rest
    if search.budget <= 0:
        raise MTZError(f"budget {search.budget} pp must be positive: give e.g. --budget 0.5")
    return search, rest


def sweep_models(model_paths: list[str | os.PathLike], out_dir: str | os.PathLike,
                 data: str | list[str] | dict[str, TaskData] = "fashion-mnist", names: list[str] | None = None,
                 data_dir: str | os.PathLike | None = None, config: ZipConfig | None = None,
                 levels=DEFAULT_LEVELS, budget: float | None = None, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, alphas=None, expected_errors=None, **options) -> dict:
    """The sharing-vs-error frontier (``zipper.sweep``): one zip per level in ``levels``, written with
    its CSV, Markdown and PNG to ``out_dir``; ``budget`` (pp) marks the points certified within it;
    ``alphas`` repeats the levels for each weight α of the first task against the second."""
    paths = [str(p) for p in model_paths]
    tasks = task_names(paths, names)
    config = start_distribution(_config(config, options, paths))
    models = {t: read_model(p) for t, p in zip(tasks, paths)}
    datas = checked_data(models, data, tasks, data_dir, config.validation_split, progress, expected_errors,
                         validates=True, budget_pp=budget, confidence=config.confidence, sweep=True)
    return sweep(models, datas, config, out_dir, levels, budget,
                 resume=resume, overwrite=overwrite, progress=progress, alphas=alphas)


def start_distribution(config: ZipConfig) -> ZipConfig:
    """Multi-worker retraining must own TensorFlow's collectives before the first operation
    (reading a model is one): everything that zips calls this first. Keras' backend, too, is fixed
    when Keras is first imported (reading a model does)."""
    activate(config.check_backend())
    if config.retrain.strategy == "multi-worker":
        from .zipper.retrain import make_strategy

        make_strategy("multi-worker")
    return config


def models_config(options: dict, model_paths) -> ZipConfig:
    """make_config, with the references' training length read beside ``model_paths`` when the
    options give neither the retraining steps nor that length (``zipper.presets``)."""
    return _config(None, options, model_paths)


def _config(config: ZipConfig | None, options: dict, model_paths=()) -> ZipConfig:
    """``model_paths``: where to read the references' training length (``presets``) when the
    options give neither the steps nor that length."""
    if config is None:
        if options.get("retrain_iterations") is None and options.get("retrain_reference_iterations") is None:
            found = reference_iterations_beside(model_paths)
            options = options if found is None else dict(options, retrain_reference_iterations=found)
        return make_config(**options)
    if options:
        raise MTZError("give either a config or keyword options, not both")
    return config


def _datas(data, tasks: list[str], data_dir) -> dict[str, TaskData]:
    if isinstance(data, dict):
        return data
    return dict(zip(tasks, load_specs(specs_for(data, len(tasks)), data_dir)))


def _zip_sweep_point(model_paths, from_sweep, point, out_dir, data, data_dir, config, overwrite, progress,
                     options) -> ZipResult:
    """The sweep's data specs are loaded again, unless ``data`` is the loaded data itself."""
    if from_sweep is None or point is None:
        raise MTZError("give both --from-sweep DIR and --point K to zip a sweep's point again")
    if model_paths:
        raise MTZError("a sweep point zips the sweep's own models: drop the model files")
    if config is not None or _config(None, options) != ZipConfig():
        raise MTZError("a sweep point fixes every zip setting: drop the zip options")
    state = load_sweep(from_sweep)
    tasks = [t["name"] for t in state["tasks"]]
    datas = _datas(data if isinstance(data, dict) else [t["data"] for t in state["tasks"]], tasks, data_dir)
    result, same = reproduce_point(from_sweep, point, datas, out_dir, overwrite=overwrite, progress=progress)
    if not same:
        raise MTZError(f"the zip of point {point} differs from the sweep's (weights digest): this machine computes "
                       "differently from the one that ran the sweep; the zip was written, compare it with evaluate")
    return result


def train_reference(out_dir: str | os.PathLike, data: str | list[str] = "fashion-mnist", seeds=(1, 2),
                    names=("a", "b"), epochs: int = 8, batch_size: int = 128, data_dir=None,
                    overwrite: bool = False, verbose: int = 1, arch: str = "mlp", hidden=(300, 100),
                    early_stopping: int | None = None, validation_split: float = 0.1):
    """Reference models (default: two LeNet-300-100, different seeds, hidden units permuted) saved as
    ``out_dir/{name}.keras``; ``arch`` "lenet5" or "resnet" for the convolutional ones.
    ``early_stopping=PATIENCE`` trains each until its validation error (on ``validation_split`` of
    its training data, the same hold-out as the zipper's) has not improved for PATIENCE epochs, at most
    ``epochs``, and keeps the best epoch's weights."""
    datas = load_specs(specs_for(data, len(seeds)), data_dir)
    return train_reference_pair(datas, out_dir, seeds=tuple(seeds), names=names, epochs=epochs, batch_size=batch_size,
                                verbose=verbose, overwrite=overwrite, arch=arch, hidden=tuple(hidden),
                                early_stopping=early_stopping, validation_split=validation_split)
