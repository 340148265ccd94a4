"""What a zip checks before any long work, each problem refused in one line that names the fix:

1. every task's data fits its model's input: the sample shape a spec loads (read from one image or
   the npz header, before loading) against the model's; a difference is adapted only by a rule the
   spec states (``@HxWxC[:pad|:resize]``, see ``data_spec``), never silently;
2. every original model answers its data far better than chance, and not far worse than
   reference.json beside it (or the user, ``expected_errors``) says: on the data's own validation
   set, else on the hold-out part of the training split (seed 0, the zipper's), at most
   ``CHECK_IMAGES`` of them. A refusal names what it tried: the pixels scaled the other way (0–255
   against [0, 1]) and the other tasks' data (specs given in the wrong order).

It then says once what the zip is about to validate on (``Progress.note``): the pixel range of
each task's data, the originals' errors, and whether the hold-out was carved from training images
the models may have trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .data import TaskData, error_rate, load_specs, source_shape, specs_for
from .data_spec import DataSpec, parse_spec, shape_text
from .errors import MTZError
from .graph.network import ZippedNetwork
from .image_folder import split_per_class
from .progress import Progress
from .zipper.validation import holdout_shortfall

CHECK_IMAGES = 1000        # enough to tell a working model from chance (standard error <= 1.6 pp)
DIAGNOSE_IMAGES = 300      # for each alternative the refusal tries
NEAR_CHANCE = 0.8          # refused above this share of the majority-class error (1 - largest class share)
FAR_ABOVE_PP = 10.0        # refused this far (plus 3 standard errors) above the stated error
HOLDOUT_SEED = 0           # TaskData.holdout's: the zipper's hold-out


@dataclass
class OriginalCheck:
    task: str
    images: int
    error: float
    chance: float              # error of always answering the largest class
    source: str                # where the images came from
    expected: float | None = None
    expected_from: str | None = None


def checked_data(models: dict, data, tasks: list[str], data_dir, validation_split: float, progress: bool = True,
                 expected_errors=None, validates: bool = False, budget_pp: float | None = None,
                 confidence: float = 0.95, sweep: bool = False) -> dict[str, TaskData]:
    """The tasks' data, loaded after their shapes are checked against ``models`` (task → ParsedModel),
    and the originals checked on it. ``validates``: the zip will choose by the hold-out; with
    ``budget_pp`` a hold-out too small to certify even an unchanged network within it is refused
    (a ``sweep`` only says so: its frontier is still worth having)."""
    original = ZippedNetwork.from_models(models)   # the unzipped joint network: refuses unlike structures first
    expected = _expected(models, tasks, expected_errors)
    if isinstance(data, dict):
        datas = data
    else:
        specs = specs_for(data, len(tasks))
        for t, spec in zip(tasks, specs):
            _check_shape(t, spec, source_shape(spec, data_dir), models[t])
        datas = dict(zip(tasks, load_specs(specs, data_dir)))
    for t in tasks:
        _check_shape(t, datas[t].spec, datas[t].x_train.shape[1:], models[t])
    short = "" if budget_pp is None else holdout_shortfall(
        budget_pp, confidence, {t: holdout_size(datas[t], validation_split) for t in tasks},
        {t: datas[t].validation_source or "hold-out of the training images" for t in tasks})
    if short and not sweep:
        raise MTZError(short)
    checks = [check_original(original, models, t, datas, validation_split, expected.get(t)) for t in tasks]
    _say(checks, datas, progress, validates or budget_pp is not None, short)
    return datas


def holdout_size(data: TaskData, validation_split: float) -> int:
    """How many images ``TaskData.holdout`` validates this task on."""
    if data.x_val is not None:
        return len(data.y_val)
    return len(split_per_class(data.y_train if data.strata is None else data.strata, validation_split,
                               HOLDOUT_SEED)[1])


# ----- shapes --------------------------------------------------------------------------------------

def _canonical(shape) -> tuple:
    shape = tuple(int(d) for d in shape)
    return shape[:2] if len(shape) == 3 and shape[2] == 1 else shape


def _check_shape(task: str, spec: str, given, model) -> None:
    want = tuple(model.input_shape)
    if any(d is None for d in want) or _canonical(given) == _canonical(want):
        return
    if len(given) == len(want) == 1 or (int(np.prod(given)) == int(np.prod(want)) and min(len(given), len(want)) < 2):
        return   # a flat vector and its image, same size: the model's own Flatten/Reshape reads it
    name = Path(model.path).name
    raise MTZError(f"task {task}: --data {spec} gives {shape_text(given)} samples but {name} takes "
                   f"{shape_text(want)}: {_shape_fix(spec, given, want)}")


def _shape_fix(spec: str, given, want) -> str:
    try:
        parsed = parse_spec(spec)
    except MTZError:
        parsed = None
    if parsed is None or len(given) != 3 or len(want) not in (2, 3):
        return f"give data whose samples are {shape_text(want)}"
    target = tuple(want) if len(want) == 3 else tuple(want) + (1,)
    if target[2] not in (1, 3):
        return f"give data whose images have {target[2]} channels"
    if given[2] == 3 and target[2] == 1:
        return "the model takes grey images and colour is never made grey here: convert the images to grey"
    grey = " (grey repeated into 3 channels)" if given[2] == 1 and target[2] == 3 else ""
    resize = str(replace(parsed, shape=target, rule="resize"))
    if parsed.shape is None and given[0] <= target[0] and given[1] <= target[1]:
        pad = str(replace(parsed, shape=target, rule="pad"))
        return f"zero-pad them with --data {pad}{grey} or resize them with --data {resize}"
    return f"resize them with --data {resize}{grey}"


# ----- the originals -------------------------------------------------------------------------------

def check_set(data: TaskData, validation_split: float, limit: int = CHECK_IMAGES) -> tuple[np.ndarray, np.ndarray, str]:
    """At most ``limit`` validation images (a seeded subset): the data's own, else the hold-out's."""
    if data.x_val is not None:
        x, y, source = data.x_val, data.y_val, f"validation images ({data.validation_source or 'its own'})"
    else:
        strata = data.y_train if data.strata is None else data.strata
        _, val = split_per_class(strata, validation_split, HOLDOUT_SEED)
        x, y, source = data.x_train[val], data.y_train[val], "hold-out images (part of the training set)"
    if len(y) > limit:
        pick = np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(len(y))[:limit])
        x, y = x[pick], y[pick]
    return x, y, source


def check_original(net, models: dict, task: str, datas: dict[str, TaskData], validation_split: float,
                   expected: tuple[float, str] | None) -> OriginalCheck:
    """The original's error on ``task``'s check set (``net``: the unzipped network); MTZError when refused."""
    x, y, source = check_set(datas[task], validation_split)
    if len(y) == 0:
        return OriginalCheck(task, 0, 0.0, 0.0, source)
    counts = np.bincount(y)
    check = OriginalCheck(task, len(y), error_rate(net.predict(task, x), y), 1.0 - counts.max() / len(y), source,
                          *(expected or (None, None)))
    limit = refusal_limit(check)
    if check.error > limit:
        raise MTZError(_refusal(check, net, models, datas, validation_split, limit))
    return check


def refusal_limit(check: OriginalCheck) -> float:
    """The error above which the original is refused: near chance, or far above the stated error."""
    if check.expected is None:
        return NEAR_CHANCE * check.chance
    far = _far_above(check)
    return far if check.expected_from == "--expected-error" else min(far, NEAR_CHANCE * check.chance)


def _far_above(check: OriginalCheck) -> float:
    e = min(max(check.expected, 1e-3), 1.0 - 1e-3)
    return check.expected + FAR_ABOVE_PP / 100 + 3 * math.sqrt(e * (1 - e) / max(check.images, 1))


def _refusal(check: OriginalCheck, net, models, datas, validation_split: float, limit: float) -> str:
    t = check.task
    name = Path(models[t].path).name
    chance = f", near chance ({100 * check.chance:.1f} % for always answering the largest class)"
    if check.expected is None:
        stated = chance
    elif check.error > _far_above(check):
        stated = f", far above the {100 * check.expected:.1f} % {check.expected_from} states"
    else:   # refused for being near chance, which the record itself says: a model that never learned
        stated = f"{chance}, as the {100 * check.expected:.1f} % {check.expected_from} states for it too"
    found = _diagnose(check, net, datas, validation_split, limit)
    causes = ("; ".join(found) if found else
              "likely causes: --data given in another order than the models (one --data per model, in order), "
              "pixels in [0, 1] where the model expects 0-255 (add :raw to the spec) or the reverse, or wrong labels")
    escape = "" if check.expected_from == "--expected-error" else \
        f"; if the model really is this poor, say so with --expected-error {100 * check.error:.0f} (one per model)"
    return (f"task {t}: the original model {name} has {100 * check.error:.1f} % error on {check.images} "
            f"{check.source} of --data {datas[t].spec}{stated}: {causes}{escape}")


def _diagnose(check: OriginalCheck, net, datas, validation_split: float, limit: float) -> list[str]:
    """What would make the original work: its data's pixels scaled the other way, another task's data."""
    t, data = check.task, datas[check.task]
    x, y, _ = check_set(data, validation_split, DIAGNOSE_IMAGES)
    found = []
    scale = float(data.preprocessing.get("scale", 1.0))
    if scale < 1.0 or float(np.max(x, initial=0.0)) <= 1.0:
        err, fix = error_rate(net.predict(t, x * 255.0), y), _with_raw(data.spec, True)
        what = "pixels 0-255 instead of [0, 1]"
    else:
        err, fix = error_rate(net.predict(t, x / 255.0), y), _with_raw(data.spec, False)
        what = "pixels in [0, 1] instead of 0-255"
    if err <= limit:
        found.append(f"with {what} its error is {100 * err:.1f} %: {fix}")
    for u, other in datas.items():
        if u == t or other.x_train.shape[1:] != data.x_train.shape[1:] or other.spec == data.spec:
            continue
        xo, yo, _ = check_set(other, validation_split, DIAGNOSE_IMAGES)
        err = error_rate(net.predict(t, xo), yo)
        if err <= limit:
            found.append(f"on task {u}'s data ({other.spec}) its error is {100 * err:.1f} %: the --data specs are "
                         "likely in another order than the models (one --data per model, in order)")
    return found


def _with_raw(spec: str, raw: bool) -> str:
    try:
        parsed = parse_spec(spec)
    except MTZError:
        return "scale the arrays by 255" if raw else "divide the arrays by 255"
    if parsed.kind == "npz" and not parsed.raw and raw:
        return f"give --data {replace(parsed, raw=True)} (uint8 arrays) or the float arrays times 255"
    if parsed.raw == raw:
        return "multiply the arrays by 255" if raw else "divide the arrays by 255"
    return f"give --data {DataSpec(parsed.kind, parsed.path, parsed.shape, parsed.rule, raw)}"


def _expected(models: dict, tasks: list[str], expected_errors) -> dict[str, tuple[float, str]]:
    """Each task's stated error: --expected-error (percent, one per model or one for all), else
    the record for the model's file in reference.json beside it (validation error, else test error)."""
    if expected_errors is not None:
        given = list(expected_errors)
        if len(given) == 1:
            given *= len(tasks)
        if len(given) != len(tasks) or any(not 0 <= e <= 100 for e in given):
            raise MTZError(f"--expected-error {','.join(map(str, given))}: give one percentage in [0, 100] per "
                           f"model ({len(tasks)}) or one for all")
        return {t: (e / 100.0, "--expected-error") for t, e in zip(tasks, given)}
    out = {}
    for t in tasks:
        path = Path(models[t].path)
        try:
            records = json.loads((path.parent / "reference.json").read_text())
        except (OSError, ValueError):
            continue
        for r in records if isinstance(records, list) else []:
            if isinstance(r, dict) and Path(str(r.get("path", ""))).name == path.name:
                err = r.get("validation_error") if r.get("validation_error") is not None else r.get("test_error")
                if isinstance(err, (int, float)):
                    out[t] = (float(err), "reference.json")
    return out


def _say(checks: list[OriginalCheck], datas: dict[str, TaskData], progress: bool, validates: bool,
         short: str = "") -> None:
    bar = Progress(0, label="data", enabled=progress)
    for c in checks:
        d = datas[c.task]
        pixels = _pixels(d)
        bar.note(f"task {c.task}: {d.spec}, {len(d.y_train)} training images {shape_text(d.x_train.shape[1:])}, "
                 f"pixels {pixels}; original error {100 * c.error:.1f} % on {c.images} {c.source}")
    carved = [c.task for c in checks if datas[c.task].x_val is None]
    if validates and carved:
        bar.note(f"the hold-out of {', '.join(carved)} is part of the training images, which the models may have "
                 "trained on: its bound can understate the error increase on new images; give a validation set "
                 "the models never saw (a validation/ folder beside train/ and test/, or x_val, y_val in the npz)")
    if short:
        bar.note(short)


def _pixels(data: TaskData) -> str:
    """The range the task's images reach the model in, and the rule that made it."""
    lo, hi = float(np.min(data.x_train, initial=0.0)), float(np.max(data.x_train, initial=0.0))
    if data.preprocessing.get("scale") == 1 / 255.0:
        rule = "8-bit pixels / 255; :raw keeps 0-255"
    else:
        try:
            rule = ":raw, 8-bit pixels as they are" if parse_spec(data.spec).raw else "float arrays as stored"
        except MTZError:
            rule = "as given"
    return f"{lo:.3g} to {hi:.3g} ({rule})"
