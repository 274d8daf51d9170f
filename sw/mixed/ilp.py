"""The integer linear program: one format per unit, least summed sensitivity loss under a hardware budget.

Variables ``x[u, k]`` in {0, 1}: unit ``u`` takes menu entry ``k``. Constraints: ``sum_k x[u, k] = 1`` for every
unit, and ``fixed + sum cost[u, k] x[u, k] + sum change[p] z[p] <= budget``, where ``z[p]`` is 1 exactly when
every unit a packing depends on takes its format (a multi-format build packs int4 tensors only then, see
:class:`sw.mixed.costs.Packing`). Objective: ``sum loss[u, k] x[u, k]`` (the additive proxy
of :mod:`sw.mixed.sensitivity`), plus a tie-break far below any loss difference that prefers the cheaper of equally
good choices. Solved exactly by HiGHS through ``scipy.optimize.milp``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .costs import CostTable, Packing
from .errors import MixedError

__all__ = ["solve"]


def _fmt(metric: str, value: float) -> str:
    return f"{metric}={value:.6g}" if metric == "energy-uj" else f"{metric}={int(np.ceil(value - 1e-9))}"


def solve(loss: np.ndarray, costs: CostTable, budget: float) -> list[int]:
    """Menu index per unit minimising the summed ``loss`` (units, menu) with ``costs`` within ``budget``."""
    units, menu = loss.shape
    if costs.table.shape != loss.shape:
        raise ValueError(f"loss is {loss.shape}, costs {costs.table.shape}: one row per unit, one column per format")
    smallest = costs.smallest()
    if budget < smallest - 1e-9 * max(1.0, abs(smallest)):
        raise MixedError(f"--budget {_fmt(costs.metric, budget)} is infeasible: the smallest feasible budget is "
                         f"{_fmt(costs.metric, smallest)} (every layer in its cheapest format)")
    packs = costs.packing
    cost = np.concatenate([costs.table.ravel(), [p.change for p in packs]])
    span = float(loss.max() - loss.min()) or 1.0
    scale = float(np.abs(cost).sum()) or 1.0
    # Loss scaled to [0, 1] first; cost only among (near) equals. A constant shift of every loss changes no choice.
    objective = np.concatenate([(loss.ravel() - loss.min()) / span, np.zeros(len(packs))]) + 1e-6 * cost / scale
    one_each = np.hstack([np.kron(np.eye(units), np.ones(menu)), np.zeros((units, len(packs)))])
    constraints = [LinearConstraint(one_each, 1, 1),
                   LinearConstraint(cost[None, :], -np.inf, budget - costs.fixed + 1e-9 * max(1.0, budget))]
    if packs:
        constraints.append(_packed_when_together(packs, units, menu))
    n = units * menu + len(packs)
    result = milp(objective, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if result.x is None:
        raise MixedError(f"--budget {_fmt(costs.metric, budget)}: the solver found no choice ({result.message})")
    return [int(k) for k in np.argmax(result.x[:units * menu].reshape(units, menu), axis=1)]


def _packed_when_together(packs: list[Packing], units: int, menu: int) -> LinearConstraint:
    """``z_p = AND(x[m, p.entry] for m in p.together)`` for every packing variable ``z_p`` (after the ``x``):
    ``z_p <= x[m, k]`` for each ``m``, and ``z_p >= sum_m x[m, k] - (|together| - 1)``."""
    rows, lo, hi = [], [], []
    for i, p in enumerate(packs):
        z = units * menu + i
        for m in p.together:
            row = np.zeros(units * menu + len(packs))
            row[z], row[m * menu + p.entry] = 1, -1
            rows.append(row), lo.append(-np.inf), hi.append(0)
        row = np.zeros(units * menu + len(packs))
        row[z] = 1
        for m in p.together:
            row[m * menu + p.entry] = -1
        rows.append(row), lo.append(1 - len(p.together)), hi.append(np.inf)
    return LinearConstraint(np.array(rows), lo, hi)
