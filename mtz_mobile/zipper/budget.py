"""``zip --budget PP``: the most shared zip certified within PP, found by a sweep, in one command.

The search is a sweep (``sweep.sweep(search=True)``: uniform sharing levels from the most shared
down, every task weight α at each, stopping after the first level with a certified point) written
beside the zip as ``OUT.frontier/`` — the evidence the choice was made on. The chosen point
(``sweep.best_point``) is then zipped again into OUT from the sweep's own models and settings and
checked bit for bit against the sweep's digest (``sweep.reproduce_point``), so the zip directory is
an ordinary one that evaluate, convert and bench read unchanged, and whose plan.json says exactly
which settings made it.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtz_mobile.data import TaskData, load_specs, specs_for
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import partial_dir, sha256_of
from mtz_mobile.graph.keras_io import ParsedModel

from .config import BudgetSearch, ZipConfig
from .staleness import zip_staleness
from .sweep import best_point, load_sweep, reproduce_point, sweep

FRONTIER_SUFFIX = ".frontier"


def frontier_dir(out_dir: str | Path) -> Path:
    """Where a budget search keeps its sweep: beside the zip directory."""
    out = Path(out_dir)
    return out.with_name(out.name + FRONTIER_SUFFIX)


def search_alphas(search: BudgetSearch, config: ZipConfig, n_tasks: int):
    """α grid of the search; None (the config's weights only) with three or more tasks."""
    return list(search.alphas) if n_tasks == 2 and config.task_weights is None else None


def zip_within_budget(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig,
                      search: BudgetSearch, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
                      progress: bool = True):
    """Sweep, choose, zip the choice into ``out_dir``; returns (ZipResult, sweep state). No point
    certified: an MTZError, with the frontier written and nothing at ``out_dir``."""
    if out_dir is None:
        raise MTZError("--budget writes the chosen zip and its frontier: give --out")
    out, where = Path(out_dir), frontier_dir(out_dir)
    if out.exists() and not overwrite:
        raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
    state = _search(models, data, config, search, where, resume, overwrite, progress)
    index = best_point(state)   # one line naming the budget when no point is certified
    if progress:
        p = state["points"][index]
        print(f"chosen: point {index} ({100 * p['shared_fraction']:.1f} % shared, α = {p['alpha']:g}); zipping it "
              f"again into {out}", flush=True)
    result, same = reproduce_point(where, index, data, out, overwrite=overwrite, progress=progress)
    if not same:
        raise MTZError(f"the zip of point {index} differs from the sweep's (weights digest): the search at {where} "
                       "was made by another version or machine; delete it and search again")
    return result, state


def _search(models, data, config, search: BudgetSearch, where: Path, resume: bool, overwrite: bool,
            progress: bool) -> dict:
    """The finished search at ``where`` when it was made with these settings (a resumed zip), else
    a new one (continuing its partial directory with ``resume``)."""
    alphas = search_alphas(search, config, len(models))
    if where.exists() and not overwrite:
        state = load_sweep(where)
        if not matches(state, [m.sha256 for m in models.values()], config, search):
            raise MTZError(f"{where} holds a search with other models or settings: pass --overwrite or delete it")
        return state
    return sweep(models, data, config, where, search.levels, search.budget, resume=resume and partial_dir(where).exists(),
                 overwrite=overwrite, progress=progress, alphas=alphas, search=True)


def matches(state: dict, model_sha256: list[str], config: ZipConfig, search: BudgetSearch) -> bool:
    """Whether a finished search was made from these models (their files' sha256) and settings
    (data: see staleness.zip_staleness, which deploy asks about the chosen zip)."""
    alphas = search_alphas(search, config, len(model_sha256))
    return (state.get("search") is not None and state["settings"] == json.loads(json.dumps(config.to_json()))
            and state["budget_pp"] == search.budget and state["levels"] == [float(v) for v in search.levels]
            and state["alphas"] == ([float(a) for a in alphas] if alphas is not None else [config.alpha])
            and [t["sha256"] for t in state["tasks"]] == model_sha256)


def search_staleness(zip_dir: str | Path, model_paths: dict[str, str], data, config: ZipConfig,
                     search: BudgetSearch, data_dir=None) -> str | None:
    """deploy's question for a budget zip: None when ``zip_dir`` is the chosen point of a finished
    search made from these models and settings (and, per staleness.zip_staleness, this data)."""
    where, zipped = frontier_dir(zip_dir), (Path(zip_dir) / "plan.json").exists()
    try:
        state = load_sweep(where)
    except MTZError:
        return "no budget search beside it" if zipped else "missing"
    if not matches(state, [sha256_of(p) for p in model_paths.values()], config, search):
        return "search settings or models changed"
    if not any(p["within_budget"] for p in state["points"]):
        # the search certified nothing: it is read again and refused in one line
        return "search certified nothing" if zipped else "missing"
    chosen = ZipConfig.from_json(state["points"][best_point(state)]["config"])
    # the chosen zip was made on the training split less the hold-out (sweep.reproduce_point)
    tasks = list(model_paths)
    try:
        loaded = data if isinstance(data, dict) else dict(zip(tasks, load_specs(specs_for(data, len(tasks)),
                                                                                 data_dir)))
        held = {t: loaded[t].holdout(chosen.validation_split) for t in tasks}
    except (MTZError, KeyError):
        return "data changed"
    return zip_staleness(zip_dir, model_paths, held, chosen, data_dir)
