"""Named recipes: the settings that ``--preset`` fills in where the user gave none.

``mtz`` (the default) is the recipe that certified 49.6 % shared within 0.5 pp on the LeNet-5
fine/coarse pair and full sharing on the MobileNetV2 pair (docs/RESULTS.md): retrain once after the
last layer, a tenth of one reference model's training in steps, Adam 1e-3 with a cosine anneal,
MTZ merges with next-layer compensation and half soft targets. ``paper`` is Algorithm 1 as
published: 100 labels-only steps after every layer at Adam 1e-4, no compensation (it certified
nothing on that pair). ``per-layer`` is mtz-mobile 0.3's default: the paper's retraining schedule
with compensation and soft targets.

A preset only fills settings left unset (None): an explicit option always wins. No TensorFlow here.
"""

from __future__ import annotations

import json
from pathlib import Path

# Steps when a preset asks for a fraction of the references' training but nothing says how long
# that was (no reference.json, no --reference-iterations): about a tenth of a small model's
# training (LeNet-5 on Fashion-MNIST: 3,750–6,750 iterations).
FALLBACK_STEPS = 500

# flat option key → value, per preset; "retrain_fraction" is used only when the steps are not given
PRESETS: dict[str, dict] = {
    "mtz": {"retrain_schedule": "end", "retrain_fraction": 0.1, "retrain_learning_rate": 1e-3,
            "retrain_learning_rate_schedule": "cosine", "retrain_distill": 0.5, "compensation": "next-layer"},
    "paper": {"retrain_schedule": "layer", "retrain_iterations": 100, "retrain_learning_rate": 1e-4,
              "retrain_learning_rate_schedule": "constant", "retrain_distill": 0.0, "compensation": "none"},
    "per-layer": {"retrain_schedule": "layer", "retrain_iterations": 100, "retrain_learning_rate": 1e-4,
                  "retrain_learning_rate_schedule": "constant", "retrain_distill": 0.5,
                  "compensation": "next-layer"},
}
DEFAULT_PRESET = "mtz"


def preset_help(key: str, text: str) -> str:
    """``text`` and what each preset sets ``key`` to (the CLI's --help shows it as the default)."""
    values = ", ".join(f"{name} {_shown(p.get(key))}" for name, p in PRESETS.items())
    return f"{text} (default: from --preset: {values})"


def _shown(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def preset_value(preset: str, key: str):
    return PRESETS[preset].get(key)


def steps_from(preset: str, iterations, fraction, reference_iterations) -> int:
    """Retraining steps: given, else the preset's count, else a fraction of the references' training
    (given or read beside the models), else FALLBACK_STEPS."""
    if iterations is not None:
        return iterations
    fixed = preset_value(preset, "retrain_iterations")
    if fixed is not None and fraction is None:
        return fixed
    fraction = fraction if fraction is not None else preset_value(preset, "retrain_fraction")
    if reference_iterations is None or fraction is None:
        return fixed if fixed is not None else FALLBACK_STEPS
    return max(1, int(round(fraction * reference_iterations)))


def reference_iterations_beside(model_paths) -> int | None:
    """The longest training among the models' records: ``reference.json`` in a model's folder (as
    ``train-reference`` writes it) or ``STEM.json`` beside it (one record); None when none says."""
    found = []
    for path in map(Path, model_paths):
        for record in _records(path):
            if Path(str(record.get("path", ""))).name == path.name and isinstance(record.get("iterations"), int):
                found.append(record["iterations"])
                break
    return max(found) if found else None


def _records(model: Path) -> list[dict]:
    out = []
    for candidate in (model.parent / "reference.json", model.with_suffix(".json")):
        try:
            obj = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        out += [r for r in (obj if isinstance(obj, list) else [obj]) if isinstance(r, dict)]
    return out
