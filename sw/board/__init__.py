"""The host side of a board: the UART bridge's driver (``host.py``), pure Python and pyserial."""

from .host import BoardLink, BridgeError, EngineStatus

__all__ = ["BoardLink", "BridgeError", "EngineStatus"]
