"""The sharing-vs-error frontier: one zip per sharing level, each measured on validation and test.

Every level shares the same fraction of each hidden layer's narrower width (``ZipConfig.shared``
= [level]) with the rest of the configuration unchanged, so the points differ only in how much is
shared — and, with ``alphas``, in the weight α of the first task against the second (in every
merge's Hessians and in the retraining loss): the grid is every α × every level. Each zip runs on
the training split less the hold-out (``TaskData.holdout``) and is
measured on the hold-out — the paired bound of ``validation`` — and on the whole test set, which
nothing chose anything by. ``reproduce_point`` zips one point again, bit for bit.

The sweep directory holds ``sweep.json`` (settings, tasks, every point with the ZipConfig that
made it and a digest of its weights), ``sources/`` (the models), and the frontier as
``frontier.csv``, ``frontier.md`` and ``frontier.png``. It is built in ``<out>.partial/`` with
``sweep.json`` rewritten after every point, which ``resume=True`` continues from.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mtz_mobile.data import TaskData, error_rate
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import output_lock, partial_dir, publish_dir, write_json_atomic
from mtz_mobile.graph.keras_io import ParsedModel
from mtz_mobile.graph.model_files import read_model, source_name
from mtz_mobile.graph.network import ZippedNetwork

from .config import DEFAULT_LEVELS, ZipConfig
from .frontier import write_frontier

SWEEP_FORMAT = "mtz-mobile/sweep"


def weights_digest(net: ZippedNetwork) -> str:
    """sha256 over every stored block (name and float32 bytes): equal digests, equal zips."""
    h = hashlib.sha256()
    for name, arr in sorted(net.arrays().items()):
        h.update(name.encode() + b"\0" + np.ascontiguousarray(arr, np.float32).tobytes())
    return h.hexdigest()


def sweep(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig, out_dir: str | Path,
          levels=DEFAULT_LEVELS, budget_pp: float | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, alphas=None, search: bool = False) -> dict:
    """Zip at every level in ``levels`` (for every α in ``alphas``; default: the config's α only) and
    write the frontier to ``out_dir``; returns sweep.json. ``search=True`` (with a budget) goes from
    the most shared level down, every α at each, and stops after the first level with a point
    certified within the budget: the points a budget search needs, not the whole grid."""
    levels = _check(config, levels, budget_pp)
    alphas = _check_alphas(config, alphas, len(models))
    if search and budget_pp is None:
        raise MTZError("a sharing search needs a budget: give --budget PP")
    grid = ([(a, level) for level in reversed(levels) for a in alphas] if search
            else [(a, level) for a in alphas for level in levels])
    out = Path(out_dir)
    held = {t: d.holdout(config.validation_split) for t, d in data.items()}
    with output_lock(out):
        if out.exists() and not overwrite:
            raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
        partial = partial_dir(out)
        state = _start(partial, models, held, config, levels, alphas, budget_pp, resume, search)
        originals = _test_errors(ZippedNetwork.from_models(models), held)
        for k, (alpha, level) in enumerate(grid):
            if k < len(state["points"]):
                continue   # done before the interruption
            if search and any(p["within_budget"] and p["level"] > level for p in state["points"]):
                break      # a more shared level is certified: the less shared ones cannot be chosen
            if progress:
                print(f"sweep point {k}: {level:.3f} of every hidden layer shared"
                      + (f", α = {alpha:g}" if len(alphas) > 1 else ""), flush=True)
            cfg = replace(config, shared=[level], alpha=alpha)
            state["points"].append(_point(k, level, models, held, cfg, originals, budget_pp, progress))
            write_json_atomic(partial / "sweep.json", state)
        write_frontier(partial, state)
        publish_dir(partial, out, overwrite)
    return state


def _check(config: ZipConfig, levels, budget_pp) -> list[float]:
    if config.max_error_increase is not None or config.threshold is not None or config.shared != ["all"]:
        raise MTZError("a sweep sets the sharing itself: drop --shared, --threshold and --max-error-increase "
                       "(--levels gives the levels, --budget marks the points within a budget)")
    levels = [float(v) for v in levels]
    if not levels or any(not 0.0 <= v <= 1.0 for v in levels) or levels != sorted(set(levels)):
        raise MTZError(f"sharing levels {levels} must be distinct, increasing fractions in [0, 1], e.g. 0,0.5,1")
    if budget_pp is not None and budget_pp <= 0:
        raise MTZError(f"budget {budget_pp} pp must be positive")
    return levels


def _check_alphas(config: ZipConfig, alphas, n_tasks: int) -> list[float]:
    if alphas is None:
        return [config.alpha]
    alphas = [float(a) for a in alphas]
    if n_tasks != 2 or config.task_weights is not None:
        raise MTZError("--alphas weighs the first of two tasks against the second: with three or more tasks "
                       "give --task-weights instead")
    if not alphas or any(not 0.0 < a < 1.0 for a in alphas) or len(set(alphas)) != len(alphas):
        raise MTZError(f"task weights α {alphas} must be distinct and strictly between 0 and 1, e.g. 0.5,0.8")
    return alphas


def _start(partial: Path, models, held, config: ZipConfig, levels, alphas, budget_pp, resume: bool,
           search: bool) -> dict:
    fresh = {"format": SWEEP_FORMAT, "settings": config.to_json(), "levels": levels, "alphas": alphas,
             "budget_pp": budget_pp,
             "tasks": [{"name": t, "source": source_name(t, m.path), "sha256": m.sha256, "data": held[t].spec,
                        "validation": held[t].validation_source} for t, m in models.items()],
             "points": []}
    if search:
        fresh["search"] = "most shared level first, stopped after the first level certified within the budget"
    if resume:
        if not (partial / "sweep.json").exists():
            raise MTZError(f"nothing to resume at {partial}: run without --resume")
        saved = json.loads((partial / "sweep.json").read_text())
        if {k: v for k, v in saved.items() if k != "points"} != json.loads(json.dumps(
                {k: v for k, v in fresh.items() if k != "points"})):
            raise MTZError(f"the partial sweep at {partial} had other settings, models or data: resume with the "
                           "same arguments or delete it")
        return saved
    from .run import start_partial  # deferred: the zipper starts TensorFlow (`--help` stays light)

    start_partial(partial, models)
    write_json_atomic(partial / "sweep.json", fresh)
    return fresh


def _test_errors(net: ZippedNetwork, data: dict[str, TaskData]) -> dict[str, float]:
    return {t: error_rate(net.predict(t, d.x_test), d.y_test) for t, d in data.items()}


def _point(k: int, level: float, models, held, cfg: ZipConfig, originals: dict, budget_pp, progress) -> dict:
    from .run import zip_networks  # deferred: the zipper starts TensorFlow

    t0 = time.perf_counter()
    result = zip_networks(models, held, cfg, progress=progress)
    zipped = _test_errors(result.network, held)
    params = result.plan.params
    validation = result.plan.validation
    point = {"index": k, "level": level, "alpha": cfg.alpha, "config": cfg.to_json(),
             "shared_fraction": params["shared_fraction"], "params_zipped": params["zipped"],
             "params_separate": params["separate_total"],
             "bytes_saved": 4 * (params["separate_total"] - params["zipped"]),
             "shared_per_layer": [layer.n_shared for layer in result.plan.layers],
             "validation": validation,
             "test": {t: {"original_error": originals[t], "zipped_error": zipped[t],
                          "increase_pp": 100 * (zipped[t] - originals[t])} for t in held},
             "within_budget": None if budget_pp is None else all(v["upper_pp"] <= budget_pp for v in validation.values()),
             "weights_sha256": weights_digest(result.network), "seconds": round(time.perf_counter() - t0, 1)}
    if progress:
        print("  " + ", ".join(f"{t}: validation {v['point_pp']:+.2f} pp (≤ {v['upper_pp']:+.2f}), test "
                               f"{point['test'][t]['increase_pp']:+.2f} pp" for t, v in validation.items())
              + f"; {100 * point['shared_fraction']:.1f} % of parameters shared, {point['seconds']} s", flush=True)
    return point


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    try:
        state = json.loads((path / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MTZError(f"{path} is not a sweep directory ({type(exc).__name__}): run `mtz-mobile sweep` first") from None
    if state.get("format") != SWEEP_FORMAT:
        raise MTZError(f"{path}/sweep.json is not an mtz-mobile sweep: run `mtz-mobile sweep` first")
    return state


def best_point(state: dict) -> int:
    """The point sharing the most parameters among those certified within the sweep's budget: the
    sweep as a search over uniform sharing levels (and task weights)."""
    if state["budget_pp"] is None:
        raise MTZError("this sweep was run without --budget, so no point is certified within one: give --point K, "
                       "or sweep again with --budget PP")
    within = [k for k, p in enumerate(state["points"]) if p["within_budget"]]
    if not within:
        raise MTZError(f"no point of this sweep is certified within its {state['budget_pp']:g} pp budget: sweep "
                       "lower --levels, retrain more, or allow a larger --budget")
    # equal shares (one level at several α): the smaller worst validation increase
    return max(within, key=lambda k: (state["points"][k]["shared_fraction"],
                                      -max(v["point_pp"] for v in state["points"][k]["validation"].values())))


def reproduce_point(sweep_dir: str | Path, index: int | str, data: dict[str, TaskData], out_dir=None,
                    overwrite: bool = False, progress: bool = True):
    """Zip point ``index`` (or ``"best"``: ``best_point``) of a sweep again (its models from the
    sweep's sources/, its config, the same hold-out); returns the ZipResult and whether its
    weights equal the sweep's bit for bit."""
    state = load_sweep(sweep_dir)
    points = state["points"]
    if index == "best":
        index = best_point(state)
    if not 0 <= index < len(points):
        raise MTZError(f"the sweep at {sweep_dir} has points 0–{len(points) - 1}, not {index}: pick one of "
                       "frontier.md's rows")
    point = points[index]
    models = {t["name"]: read_model(Path(sweep_dir) / "sources" / t["source"]) for t in state["tasks"]}
    from .run import zip_networks  # deferred: the zipper starts TensorFlow

    held = {t: data[t].holdout(point["config"]["validation_split"]) for t in models}
    result = zip_networks(models, held, ZipConfig.from_json(point["config"]), out_dir, overwrite=overwrite,
                          progress=progress)
    return result, weights_digest(result.network) == point["weights_sha256"]
