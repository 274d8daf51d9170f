"""The instruction-set emulator: the engine's functional model and its cycle model."""

from .machine import Emulator, Status
from .timing import Timing

__all__ = ["Emulator", "Status", "Timing"]
