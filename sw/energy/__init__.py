"""Energy per inference from the events the emulator counts, times a stated, sourced and replaceable table."""

from .model import CLASSES, event_energies, mac_pj
from .report import energy_markdown, energy_report, network_layers, program_events
from .table import DEFAULT_TABLE, EnergyTable, EnergyTableError, load_table

__all__ = ["CLASSES", "DEFAULT_TABLE", "EnergyTable", "EnergyTableError", "energy_markdown", "energy_report",
           "event_energies", "load_table", "mac_pj", "network_layers", "program_events"]
