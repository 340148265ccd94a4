"""Each task's validation images, the original models' answers on them, and the paired bound on
how much a zipped network's error rose (``increase_bound``).

The images come from ``TaskData.holdout``: never from the test set, and never seen by the
Hessians or retraining, because the zip runs on the reduced training split.
"""

from __future__ import annotations

import numpy as np

from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import ZippedNetwork

from .increase_bound import IncreaseBound, images_to_certify, paired_increase, upper_bound


def right_answers(net: ZippedNetwork, task: str, x: np.ndarray, y: np.ndarray, ops=None) -> np.ndarray:
    return np.argmax(net.predict(task, x, ops=ops), axis=1) == y


class Validation:
    def __init__(self, original: ZippedNetwork, data: dict[str, TaskData], confidence: float, ops=None):
        self.sets = {t: data[t].validation for t in original.tasks}
        self.sources = {t: data[t].validation_source for t in original.tasks}
        self.confidence, self.ops = confidence, ops
        self.original_right = {t: right_answers(original, t, *self.sets[t], ops) for t in original.tasks}

    def increases(self, net: ZippedNetwork, tasks: list[str] | None = None) -> dict[str, IncreaseBound]:
        """Each task's change against its original model, paired over the same images."""
        return {t: paired_increase(self.original_right[t], right_answers(net, t, *self.sets[t], self.ops),
                                   self.confidence) for t in (tasks or list(self.sets))}

    def check_budget(self, budget_pp: float) -> None:
        """Refuse a budget that not even an unchanged network can be certified within."""
        short = holdout_shortfall(budget_pp, self.confidence, {t: len(x) for t, (x, _) in self.sets.items()},
                                  self.sources)
        if short:
            raise MTZError(short)

    def report(self, net: ZippedNetwork) -> dict:
        """plan.json's ``validation``: per task the images, their source, the original's error and the bound."""
        return {t: dict(b.to_json(), source=self.sources[t], original_error=float(1.0 - np.mean(self.original_right[t])))
                for t, b in self.increases(net).items()}


def holdout_shortfall(budget_pp: float, confidence: float, images: dict[str, int],
                      sources: dict[str, str | None] | None = None) -> str:
    """'' when every task's validation set is large enough for an unchanged network to be certified
    within ``budget_pp``; else one sentence saying how many images it would need (the bound's own
    arithmetic, ``images_to_certify``) and where to get them."""
    need = images_to_certify(budget_pp / 100.0, confidence)
    short = {t: n for t, n in images.items() if n < need}
    if not short:
        return ""
    t, n = min(short.items(), key=lambda item: item[1])
    floor = 100 * upper_bound(0, 0, n, confidence) if n > 0 else 100.0
    source = (sources or {}).get(t) or ""
    own = source.startswith("validation") or source.startswith("x_val")
    more = ("add images to the validation set" if own else
            "give a validation set of that size (a validation/ folder, or x_val in the npz), or raise "
            "--validation-split")
    return (f"task {t} has {n} validation images{f' ({source})' if source else ''}: on so few even a network "
            f"that changed nothing is bounded at +{floor:.2f} pp at {100 * confidence:g} % confidence, so nothing "
            f"can be certified within {budget_pp:g} pp; that needs at least {need} images per task: {more}, "
            "or allow a larger budget")
