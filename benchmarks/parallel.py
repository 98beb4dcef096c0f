"""Run a family benchmark's nets on several cores: one process of one torch thread per net."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def map_on_cores(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int) -> list[Any]:
    """[fn(item) for item in items], `jobs` at once in spawned processes (fn and items must
    pickle: a module-level function, or a functools.partial of one). Each net seeds its own
    training, so a row does not depend on which process ran it or in what order."""
    if jobs == 1:
        return [fn(item) for item in items]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, items))
