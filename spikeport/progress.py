"""Progress on a terminal, silence in CI: bars show only on a TTY and never with --quiet."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm import tqdm


@contextlib.contextmanager
def progress(
    total: int, desc: str, quiet: bool = False, unit: str = "sample"
) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` callback backed by a tqdm bar (disabled off a TTY or when quiet)."""
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=True if quiet else None,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        yield bar.update
    finally:
        bar.close()
