"""A local Hive server speaking protocol v1, for development and tests (stdlib only)."""

from .faults import Fault
from .records import RequestRecord
from .server import HiveDevServer, start_demo
from .store import Store

__all__ = ["Fault", "HiveDevServer", "RequestRecord", "Store", "start_demo"]
