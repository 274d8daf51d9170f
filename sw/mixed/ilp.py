"""The integer linear program: one format per unit, least summed sensitivity loss under a hardware budget.

Variables ``x[u, k]`` in {0, 1}: unit ``u`` takes menu entry ``k``. Constraints: ``sum_k x[u, k] = 1`` for every
unit, and ``fixed + sum cost[u, k] x[u, k] <= budget``. Objective: ``sum loss[u, k] x[u, k]`` (the additive proxy
of :mod:`sw.mixed.sensitivity`), plus a tie-break far below any loss difference that prefers the cheaper of equally
good choices. Solved exactly by HiGHS through ``scipy.optimize.milp``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .costs import CostTable
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
    cost = costs.table.ravel()
    span = float(loss.max() - loss.min()) or 1.0
    scale = float(np.abs(cost).sum()) or 1.0
    # Loss scaled to [0, 1] first; cost only among (near) equals. A constant shift of every loss changes no choice.
    objective = (loss.ravel() - loss.min()) / span + 1e-6 * cost / scale
    one_each = np.kron(np.eye(units), np.ones(menu))
    constraints = [LinearConstraint(one_each, 1, 1),
                   LinearConstraint(cost[None, :], -np.inf, budget - costs.fixed + 1e-9 * max(1.0, budget))]
    result = milp(objective, constraints=constraints, integrality=np.ones(units * menu), bounds=Bounds(0, 1))
    if result.x is None:
        raise MixedError(f"--budget {_fmt(costs.metric, budget)}: the solver found no choice ({result.message})")
    return [int(k) for k in np.argmax(result.x.reshape(units, menu), axis=1)]
