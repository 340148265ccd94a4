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

from .increase_bound import IncreaseBound, images_to_certify, paired_increase


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
        need = images_to_certify(budget_pp / 100.0, self.confidence)
        for t, (x, _) in self.sets.items():
            if len(x) < need:
                raise MTZError(f"task {t} has {len(x)} validation images ({self.sources[t]}): too few to certify "
                               f"even no sharing within {budget_pp} pp at {100 * self.confidence:g} % confidence; "
                               f"hold out at least {need} (raise --validation-split) or raise the budget")

    def report(self, net: ZippedNetwork) -> dict:
        """plan.json's ``validation``: per task the images, their source, the original's error and the bound."""
        return {t: dict(b.to_json(), source=self.sources[t], original_error=float(1.0 - np.mean(self.original_right[t])))
                for t, b in self.increases(net).items()}
