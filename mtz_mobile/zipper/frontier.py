"""A sweep's frontier as CSV, Markdown and a PNG chart (share of parameters vs each task's error
increase: validation point estimate, its upper bound, and the test set's increase)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtz_mobile.fileio import write_atomic
from mtz_mobile.markdown import markdown_table
from mtz_mobile.png import pyplot, save_png

from .validation import holdout_shortfall


def frontier_rows(state: dict) -> list[dict]:
    """One flat row per point: what the user chooses from."""
    rows = []
    for p in state["points"]:
        row = {"point": p["index"], "level": p["level"], "alpha": point_alpha(p),
               "shared_params_pct": round(100 * p["shared_fraction"], 3),
               "bytes_saved": p["bytes_saved"], "shared_per_layer": "/".join(map(str, p["shared_per_layer"]))}
        for t, v in p["validation"].items():
            row.update({f"{t}_validation_pp": round(v["point_pp"], 3), f"{t}_bound_pp": round(v["upper_pp"], 3),
                        f"{t}_validation_images": v["images"],
                        f"{t}_test_pp": round(p["test"][t]["increase_pp"], 3),
                        f"{t}_test_error_pct": round(100 * p["test"][t]["zipped_error"], 3)})
        row["within_budget"] = "" if p["within_budget"] is None else ("yes" if p["within_budget"] else "no")
        row["weights_sha256"] = p["weights_sha256"]
        rows.append(row)
    return rows


def frontier_markdown(state: dict) -> str:
    tasks = [t["name"] for t in state["tasks"]]
    confidence = 100 * state["settings"]["confidence"]
    several = len(state.get("alphas", [])) > 1
    head = ["point"] + (["α"] if several else []) + ["shared params", "MB saved", "Ñ per layer"]
    head += [f"{t}: validation (bound)" for t in tasks] + [f"{t}: test" for t in tasks]
    if state["budget_pp"] is not None:
        head.append(f"within {state['budget_pp']} pp")
    body = []
    for p in state["points"]:
        cells = [p["index"]] + ([f"{point_alpha(p):g}"] if several else []) + [
                 f"{100 * p['shared_fraction']:.1f} %", f"{p['bytes_saved'] / 1e6:.3f}",
                 " / ".join(map(str, p["shared_per_layer"]))]
        cells += [f"{p['validation'][t]['point_pp']:+.2f} pp (≤ {p['validation'][t]['upper_pp']:+.2f})" for t in tasks]
        cells += [f"{p['test'][t]['increase_pp']:+.2f} pp" for t in tasks]
        if state["budget_pp"] is not None:
            cells.append("yes" if p["within_budget"] else "no")
        body.append(cells)
    settings = state["settings"]
    return (f"Error increase per task against its original model: on the validation hold-out (point estimate and "
            f"upper bound at {confidence:g} % confidence) and on the whole test set. Method {settings['method']}, "
            f"pairing {settings['pairing']}, compensation {settings['compensation']}, "
            f"{_retraining(settings)}, task weights {_weights(state)}, seed {settings['seed']}. "
            f"Reproduce a point with `mtz-mobile zip --from-sweep DIR --point K --out ZIP` (`--point best`: the "
            f"most shared within the budget).\n\n"
            + markdown_table(head, body) + "\n" + _shortfall(state))


def write_frontier(directory: Path, state: dict) -> None:
    rows = frontier_rows(state)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["point"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(directory / "frontier.csv", buf.getvalue())
    write_atomic(directory / "frontier.md", frontier_markdown(state))
    plot_frontier([(state, "")], directory / "frontier.png")


def _by_alpha(sweeps: list[tuple[dict, str]]):
    """(state, label, points) per sweep, and per α within a sweep of several."""
    for state, label in sweeps:
        alphas = state.get("alphas", [])
        if len(alphas) <= 1:
            yield state, label, state["points"]
            continue
        for a in alphas:
            yield state, f"{label} α={a:g}".strip(), [p for p in state["points"] if point_alpha(p) == a]


def plot_frontier(sweeps: list[tuple[dict, str]], path: Path, test: bool = True) -> None:
    """Share of parameters vs error increase, one line per task (and per sweep when several are
    compared: ``label`` names each); the budget, if any, as a horizontal line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    budget = None
    for state, label, points in _by_alpha(sweeps):
        x = [100 * p["shared_fraction"] for p in points]
        for t in [task["name"] for task in state["tasks"]]:
            name = f"{label} {t}".strip()
            line, = ax.plot(x, [p["validation"][t]["point_pp"] for p in points], "o-", label=f"{name} validation")
            ax.plot(x, [p["validation"][t]["upper_pp"] for p in points], "--", color=line.get_color(),
                    label=f"{name} bound")
            if test:
                ax.plot(x, [p["test"][t]["increase_pp"] for p in points], "s:", color=line.get_color(),
                        label=f"{name} test")
        budget = state["budget_pp"] if state["budget_pp"] is not None else budget
    if budget is not None:
        ax.axhline(budget, color="#718096", lw=1)
        ax.annotate(f"budget {budget} pp", xy=(0.99, budget), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", color="#718096", fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("parameters shared (% of the separate models')")
    ax.set_ylabel("error increase (pp)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def _retraining(settings: dict) -> str:
    r = settings["retrain"]
    when = "after the last layer" if r.get("schedule") == "end" else "per layer"
    schedule = r.get("learning_rate_schedule", "constant")
    return f"{r['iterations']} retraining iterations {when} (Adam {r['learning_rate']:g}, {schedule})"


def point_alpha(point: dict) -> float:
    return point.get("alpha", point["config"]["alpha"])   # sweeps before --alphas kept it in the config only


def _weights(state: dict) -> str:
    settings = state["settings"]
    if settings.get("task_weights"):
        return " / ".join(f"{w:g}" for w in settings["task_weights"])
    return "α = " + ", ".join(f"{a:g}" for a in state.get("alphas", [settings["alpha"]]))


def _shortfall(state: dict) -> str:
    """A paragraph when the validation sets are too small for anything to be certified within the budget."""
    if state["budget_pp"] is None or not state["points"]:
        return ""
    images = {t: v["images"] for t, v in state["points"][0]["validation"].items()}
    sources = {t["name"]: t.get("validation") for t in state["tasks"]}
    short = holdout_shortfall(state["budget_pp"], state["settings"]["confidence"], images, sources)
    return f"\n**Nothing can be certified here.** {short[0].upper()}{short[1:]}.\n" if short else ""
