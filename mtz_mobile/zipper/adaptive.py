"""The adaptive search: per layer, the most sharing whose error increase is certified within budget.

The shared count is searched on a grid of N/8 steps by bisection (assuming more sharing never
helps accuracy); each trial zips the layer (with its light retraining) on a copy of the network,
and every trial reuses the step's Hessians, since all of them start from the same network. A trial
is accepted when, for every task, the *upper confidence bound* of its error increase against its
original model (paired over the validation images, ``increase_bound``) is within the budget.

Layers right after it that have no pairing of their own (a depthwise convolution inherits its
input's) are merged inside each trial, before it is measured: the layer's pairing decides their
sharing too, and their merge error belongs to its verdict.
"""

from __future__ import annotations

from dataclasses import replace

from mtz_mobile.graph.network import ZippedNetwork

from .plan import LayerRecord
from .step import LayerStep, zip_layer
from .validation import Validation


class _Trials:
    """Zipped candidates by grid index, each with its measured increases and verdict."""

    def __init__(self, step: LayerStep, validation: Validation, followers: list[tuple[int, int]]):
        self.step, self.validation, self.followers = step, validation, followers
        self.active = step.existing + [step.newcomer]
        node = step.net.nodes[step.node]
        n_joint = sum(g.size for g in node.groups if set(g.owners) <= set(step.existing))
        n_new = sum(g.size for g in node.groups if g.owners == (step.newcomer,))
        self.top = min(n_joint, n_new)
        self.grid = sorted({int(round(self.top * q / 8)) for q in range(9)})
        self.hessians = step.hessians(step.rng())
        self.budget = step.config.max_error_increase / 100.0
        self.done: dict[int, tuple] = {}

    def within_budget(self, idx: int) -> bool:
        if idx not in self.done:
            candidate = replace(self.step, net=self.step.net.copy())
            records = [zip_layer(candidate, count=self.grid[idx], hessians=self.hessians)]
            records += [zip_layer(replace(candidate, node=node, layer=layer)) for node, layer in self.followers]
            bounds = self.validation.increases(candidate.net, self.active)
            ok = all(b.within(self.budget) for b in bounds.values())
            self.done[idx] = (ok, candidate.net, records, bounds)
            if self.step.progress:
                print(f"  {self.step.net.nodes[self.step.node].name}: {self.grid[idx]} of {self.top} shared -> "
                      "validation error " + ", ".join(f"{t} {b.describe()}" for t, b in bounds.items())
                      + (" ok" if ok else " over budget"), flush=True)
        return self.done[idx][0]


def adaptive_layer(step: LayerStep, validation: Validation, followers: list[tuple[int, int]] = ()
                   ) -> tuple[list[LayerRecord], ZippedNetwork]:
    """The largest grid count within budget for every task; returns the records of the layer (with
    the search) and of its ``followers`` ((node, layer) of the steps its pairing decides), and the
    network."""
    trials = _Trials(step, validation, list(followers))
    lo, hi = 0, len(trials.grid) - 1
    if not trials.within_budget(hi):
        hi -= 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if trials.within_budget(mid):
                lo = mid
            else:
                hi = mid - 1
        trials.within_budget(lo)  # nothing shared may still be over budget: it is the best there is
    else:
        lo = hi
    ok, chosen, records, _ = trials.done[lo]
    records[0].search = {"grid": trials.grid, "budget_pp": step.config.max_error_increase,
                     "confidence": step.config.confidence,
                     "trials": [{"count": trials.grid[j], "within_budget": trials.done[j][0],
                                 "increase": {t: b.to_json() for t, b in trials.done[j][3].items()}}
                                for j in sorted(trials.done)],
                     "chosen": trials.grid[lo], "within_budget": ok,
                     "judged_with": [step.net.nodes[node].name for node, _ in followers]}
    return records, chosen
