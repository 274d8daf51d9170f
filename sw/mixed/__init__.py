"""Mixed precision chosen by an integer linear program: a format per layer under a budget in hardware terms.

``menu`` (the formats a layer may take and the engine that runs them), ``units`` (layers that choose together),
``sensitivity`` (measured output error per unit and format), ``costs`` (cycles, weight bits, an energy hook, from
compiled programs), ``ilp`` (HiGHS), ``select`` (the pipeline), ``report`` (the printed table).
"""

from .costs import COSTS, CostTable, LayerCost, set_energy_model
from .errors import MixedError
from .menu import Choice, container, parse_menu
from .select import MixedPlan, build, choose, measure, parse_budget, prepare

__all__ = ["COSTS", "Choice", "CostTable", "LayerCost", "MixedError", "MixedPlan", "build", "choose", "container",
           "measure", "parse_budget", "parse_menu", "prepare", "set_energy_model"]
