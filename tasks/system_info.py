"""get_system_info: the fleet's inventory task (no params)."""

import platform
import socket

import psutil

from executor import api


def get_system_info() -> dict:
    settings = api.settings()
    return {
        "status": "success",
        "data": {
            # The five fields the 1.0.x worker reported, under the same names.
            "hostname": socket.gethostname(),
            "os": platform.system(),
            "os_version": platform.version(),
            "processor": platform.processor() or platform.machine(),
            "python_version": platform.python_version(),
            # Cheap extras from psutil and the worker itself.
            "cpu_count": psutil.cpu_count(logical=True),
            "memory_total_mb": psutil.virtual_memory().total // (1024 * 1024),
            "worker_version": settings.get("worker_version"),
            "pool_size": settings.get("pool_size"),
        },
    }
