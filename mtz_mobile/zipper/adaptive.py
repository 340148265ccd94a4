"""The adaptive search: per layer, the most sharing whose validation error stays within budget.

The shared count is searched on a grid of N/8 steps by bisection (assuming more sharing never
helps accuracy); each trial zips the layer (with its light retraining) on a copy of the network,
and every trial reuses the step's Hessians, since all of them start from the same network.
"""

from __future__ import annotations

from dataclasses import replace

from mtz_mobile.data import error_rate
from mtz_mobile.graph.network import ZippedNetwork

from .plan import LayerRecord
from .step import LayerStep, zip_layer


def validation_errors(net: ZippedNetwork, tasks: list[str], validation: dict, ops) -> dict[str, float]:
    return {t: error_rate(net.predict(t, validation[t][0], ops=ops), validation[t][1]) for t in tasks}


class _Trials:
    """Zipped candidates by grid index, each with its validation errors and verdict."""

    def __init__(self, step: LayerStep, validation: dict, base_errors: dict[str, float]):
        self.step, self.validation = step, validation
        self.active = step.existing + [step.newcomer]
        self.base = {t: base_errors[t] for t in self.active}
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
            record = zip_layer(candidate, count=self.grid[idx], hessians=self.hessians)
            errors = validation_errors(candidate.net, self.active, self.validation, self.step.calib.ops)
            ok = all(errors[t] - self.base[t] <= self.budget for t in self.active)
            self.done[idx] = (ok, candidate.net, record, errors)
            if self.step.progress:
                print(f"  {self.step.net.nodes[self.step.node].name}: {self.grid[idx]} of {self.top} shared -> "
                      "validation error increase "
                      + ", ".join(f"{t} {100 * (errors[t] - self.base[t]):+.2f} pp" for t in self.active)
                      + (" ok" if ok else " over budget"), flush=True)
        return self.done[idx][0]


def adaptive_layer(step: LayerStep, validation: dict, base_errors: dict[str, float]
                   ) -> tuple[LayerRecord, ZippedNetwork]:
    """The largest grid count within budget for every task; returns its record (with the search)
    and its network."""
    trials = _Trials(step, validation, base_errors)
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
    ok, chosen, record, errors = trials.done[lo]
    record.search = {"grid": trials.grid, "budget_pp": step.config.max_error_increase,
                     "baseline_errors": trials.base,
                     "trials": [{"count": trials.grid[j], "errors": trials.done[j][3],
                                 "within_budget": trials.done[j][0]} for j in sorted(trials.done)],
                     "chosen": trials.grid[lo], "within_budget": ok}
    return record, chosen
