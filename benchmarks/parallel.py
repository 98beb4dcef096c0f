"""Run a family benchmark's nets on several cores: one process of one torch thread per net."""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from spikeport.errors import BadInput
from spikeport.fileio import check_output_file


def map_on_cores(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    jobs: int,
    done: Callable[[list[Any]], None] = lambda rows: None,
) -> list[Any]:
    """[fn(item) for item in items], `jobs` at once in spawned processes (fn and items must
    pickle: a module-level function, or a functools.partial of one). Each net seeds its own
    training, so a row does not depend on which process ran it or in what order. `done(rows)`
    after each row, in the items' order (so a long run stopped early keeps its rows)."""
    if jobs == 1:
        return _collect(map(fn, items), done)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return _collect(pool.map(fn, items), done)


def _collect(results: Iterable[Any], done: Callable[[list[Any]], None]) -> list[Any]:
    """The results as a list, `done(rows so far)` after each one arrives."""
    rows: list[Any] = []
    for row in results:
        rows.append(row)
        done(rows)
    return rows


def add_jobs(ap: argparse.ArgumentParser) -> None:
    """`--jobs N` (at least 1, default 1): nets run at once, one core each."""

    def at_least_one(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
        return int(text)

    ap.add_argument("--jobs", type=at_least_one, default=1, help="nets run at once, one core each")


def out_path(
    ap: argparse.ArgumentParser, given: str | Path | None, default: Path, flag: str = "--out"
) -> Path:
    """`--out` (`flag`; a relative path is the working directory's, as for any tool), or `default`;
    checked before any net trains, so that a run of hours does not end in a write that fails
    (ap.error: one line, exit 2). spikeport's own output check, plus an existing folder: these
    scripts write with write_text, which creates none."""
    out = Path(given) if given else default
    try:
        check_output_file(out, flag)
    except BadInput as e:
        ap.error(str(e))
    if not out.parent.is_dir():
        ap.error(f"{flag} {out}: folder {out.parent.resolve()} does not exist")
    return out
