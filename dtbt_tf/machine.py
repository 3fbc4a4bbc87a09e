"""What a benchmark result records about the machine it was measured on (CPUs, versions, date, load)."""
from __future__ import annotations

import datetime
import os
import platform
import sys


def machine_info() -> dict:
    """CPU count, library versions, date and load average at the time of the call."""
    import numpy as np

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if "tensorflow" in sys.modules:  # a benchmark imported it; don't import it just to ask
        info["tensorflow"] = sys.modules["tensorflow"].__version__
    if hasattr(os, "getloadavg"):
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    return info
