"""The CPU priority of the model loader process (services.serving.loader).

On a busy machine a version's read competes for cores with the worker it reads for: at the default
niceness the worker's event loop sat runnable but unscheduled for 50-190 ms at a time while a version was
read, on two cores under load. Niced, the loader takes the CPU the worker leaves idle; the read takes
longer, requests do not.

A module of its own, importing nothing heavy: the loader process runs ``lower_priority`` before it
imports MLflow, scikit-learn and polars, the seconds of CPU a new loader spends first.
"""

from __future__ import annotations

import os

LOADER_NICENESS = 10


def lower_priority() -> None:
    """The loader process's initializer: it yields the CPU to the serving worker."""
    os.nice(LOADER_NICENESS)
