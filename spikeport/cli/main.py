"""The `spikeport` command line: click commands that call the library. No logic lives here.

Every exception ends in `SpikeportGroup.main`, the one place that turns it into one
`error:` line on stderr and an exit code (spikeport.errors.describe): 0 ok, 1 a check failed,
2 bad input or usage (click's usage errors included), 3 an internal error, 130 interrupted.
The traceback of an internal error shows with SPIKEPORT_TRACEBACK=1 or `spikeport --debug`.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import click

from spikeport import __version__
from spikeport.errors import TRACEBACK_ENV, BadInput, Interrupted, Terminated, describe
from spikeport.fileio import check_output_file, remove_temporaries
from spikeport.threads import set_threads

QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")
MAX_T = 100_000  # a sanity bound on any timestep count: beyond it a run would not end
_debug = False
_NO_ARGS: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run_safely(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Kept for commands written before the group mapped errors itself: does nothing."""
    return fn


def say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


# ------------------------------------------------------------------------------ option types


class Finite(click.FloatRange):
    """A float in a range that is also finite (click's FloatRange lets NaN through)."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def positive_int(maximum: int | None = None) -> click.IntRange:
    return click.IntRange(1, maximum)


TIMESTEPS = positive_int(MAX_T)
PERCENTILE = Finite(0, 100, min_open=True)


def output_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback: an output file path is checked when the arguments are parsed."""
    if value is not None:
        check_output_file(value, f"{param.opts[-1]}" if param.opts else "output")
    return value


def refuse_overwrite(outputs: tuple[str | None, ...], inputs: tuple[str | None, ...]) -> None:
    """An output must be none of the command's inputs, nor another of its outputs: writing it
    would destroy the file the command reads (a model, its data) or write one file twice."""
    seen = [(i, "an input") for i in inputs if i]
    for out in (o for o in outputs if o):
        for other, what in seen:
            if _same_file(out, other):
                raise BadInput(f"output '{out}' is also {what} of this command; write it elsewhere")
        seen.append((out, "another output"))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: same only if the paths are
        return os.path.abspath(a) == os.path.abspath(b)


def parse_timesteps(text: str) -> list[int]:
    try:
        ts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BadInput(f"-T '{text}' is not a comma-separated list of integers") from None
    if not ts or min(ts) < 1 or max(ts) > MAX_T:
        raise BadInput(f"-T '{text}' needs integers in 1..{MAX_T}")
    return sorted(set(ts))


# ------------------------------------------------------------------------------ the group


def _on_signal(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


def _install_signals() -> Callable[[], None]:
    """SIGTERM / SIGHUP raise Terminated (a KeyboardInterrupt), so cleanup runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {s: signal.signal(s, _on_signal) for s in sigs}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _report(exc: BaseException) -> int:
    remove_temporaries()
    code, line = describe(exc)
    if _debug or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: {line}", err=True)
    return code


class SpikeportGroup(click.Group):
    """click's group, with one exit path for every outcome (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # past click's own handler, which prints a blank line
            raise Interrupted() from e

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _debug
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        _debug = False
        restore = _install_signals()
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
            code = rv if isinstance(rv, int) else 0  # click returns an Exit's code
        except SystemExit:
            raise
        except _NO_ARGS as exc:  # `spikeport` alone: its help (click >= 8.2 raises for it)
            click.echo(exc.ctx.get_help() if exc.ctx else "")  # type: ignore[attr-defined]
            code = 0
        except BaseException as exc:  # noqa: BLE001 - the one place every error ends
            code = _report(exc)
        finally:
            restore()
        sys.stdout.flush()
        sys.exit(code)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _debug
    _debug = _debug or value
    return value


@click.group(
    name="spikeport", cls=SpikeportGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="spikeport")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help=f"Show the traceback of an internal error (or set {TRACEBACK_ENV}=1).",
)
@click.option(
    "--threads",
    type=positive_int(),
    default=None,
    help="Threads for the numeric work: torch's pool gets them, numpy's BLAS one (one pool, "
    "no oversubscription). Default: one per core.",
)
def main(threads: int | None) -> None:
    """Turn a pretrained ANN (ONNX) into a calibrated, integer spiking network."""
    set_threads(threads)


from spikeport.cli import commands, finetune_cmd, target_cmds  # noqa: E402,F401  (registers the verbs)
