"""sw/mixed/ilp.py: the MILP against exhaustive search, and the infeasible-budget message."""

import itertools

import numpy as np
import pytest

from sw.mixed import CostTable, MixedError
from sw.mixed.costs import Packing
from sw.mixed.ilp import solve


def _brute(loss, cost, fixed, budget):
    best = None
    for picks in itertools.product(range(loss.shape[1]), repeat=loss.shape[0]):
        c = fixed + sum(cost[u, k] for u, k in enumerate(picks))
        value = sum(loss[u, k] for u, k in enumerate(picks))
        if c <= budget and (best is None or value < best):
            best = value
    return best


@pytest.mark.parametrize("seed", range(12))
def test_solve_matches_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    units, menu = rng.integers(2, 6), rng.integers(2, 4)
    cost = rng.integers(1, 100, size=(units, menu)).astype(float)
    loss = rng.random((units, menu))
    table = CostTable("cycles", cost, float(rng.integers(0, 50)), [])
    budget = float(rng.uniform(table.smallest(), table.fixed + cost.max(axis=1).sum()))
    picks = solve(loss, table, budget)
    assert table.total(picks) <= budget
    assert sum(loss[u, k] for u, k in enumerate(picks)) == pytest.approx(_brute(loss, cost, table.fixed, budget))


def test_tie_break_prefers_the_cheaper_of_equal_losses():
    cost = np.array([[10.0, 20.0], [10.0, 20.0]])
    picks = solve(np.zeros((2, 2)), CostTable("cycles", cost, 0.0, []), 100.0)
    assert picks == [0, 0]


def test_infeasible_budget_names_the_smallest_feasible_one():
    cost = np.array([[10.0, 20.0], [30.0, 5.0]])
    table = CostTable("weight-bits", cost, 7.0, [])
    with pytest.raises(MixedError) as e:
        solve(np.zeros((2, 2)), table, 21.0)
    assert str(e.value) == ("--budget weight-bits=21 is infeasible: the smallest feasible budget is "
                            "weight-bits=22 (every layer in its cheapest format)")
    assert solve(np.ones((2, 2)), table, 22.0) == [0, 1]        # exactly the smallest budget is feasible


@pytest.mark.parametrize("seed", range(12))
def test_packing_changes_apply_only_when_their_units_share_the_format(seed):
    """Costs that change when every unit of a group takes one format (a multi-format build's packed int4): the MILP
    with its AND variables against exhaustive search over CostTable.total, which applies them by definition."""
    rng = np.random.default_rng(100 + seed)
    units, menu = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    cost = rng.integers(20, 100, size=(units, menu)).astype(float)
    packing = [Packing(u, int(rng.integers(menu)), tuple(sorted({u, *rng.choice(units, size=2).tolist()})),
                       float(rng.integers(-40, 10))) for u in range(units)]
    table = CostTable("cycles", cost, 5.0, [], packing)
    loss = rng.random((units, menu))
    totals = {p: table.total(list(p)) for p in itertools.product(range(menu), repeat=units)}
    budget = float(rng.uniform(min(totals.values()), max(totals.values())))
    picks = solve(loss, table, budget)
    assert table.total(picks) <= budget
    best = min(sum(loss[u, k] for u, k in enumerate(p)) for p, c in totals.items() if c <= budget)
    assert sum(loss[u, k] for u, k in enumerate(picks)) == pytest.approx(best)
