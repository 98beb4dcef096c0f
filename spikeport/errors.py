"""The one error family of spikeport, and the one mapping from any exception to an exit code.

Library code raises these; only `spikeport.cli` prints them, through `describe`:
0 ok, 1 a check failed, 2 bad input or usage, 3 an internal error (a bug), 130 interrupted.
"""

from __future__ import annotations

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
TRACEBACK_ENV = "SPIKEPORT_TRACEBACK"


class SpikeportError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = EXIT_BAD_INPUT


class BadInput(SpikeportError):
    """A file, key, shape or option the user gave is wrong."""


class UnsupportedOp(SpikeportError):
    """A node has no treatment in spikeport (names the node and its op type)."""


class FormatError(BadInput):
    """A .spk artifact is malformed, of another version, or inconsistent."""


class CapabilityExceeded(SpikeportError):
    """A graph does not fit a target profile: bits, fan-in, op, or proven overflow."""


class OverflowWithinSteps(CapabilityExceeded):
    """The range proof finds a value that can overflow within --max-T steps (fewer steps may
    prove: quantize says which)."""


class SimulationOverflow(SpikeportError):
    """The integer simulator saw a value leave its declared bit width."""


class CheckFailed(SpikeportError):
    """A requested check (accuracy bar, bit-exact comparison) did not hold."""

    exit_code = EXIT_CHECK_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised in the main thread so that cleanup runs as for Ctrl-C."""


class Interrupted(BaseException):
    """A KeyboardInterrupt carried out of a command past click (which would print a blank
    line for it); `describe` reports it like the interrupt itself."""


def one_line(text: str, limit: int = 400) -> str:
    """`text` on one line, shortened to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, the one line for stderr, without 'error: ') for any exception."""
    import errno

    import click

    from spikeport.fileio import ENVIRONMENT_ERRNOS

    if isinstance(exc, SpikeportError):
        return exc.exit_code, one_line(str(exc))
    if isinstance(exc, click.exceptions.ClickException):
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return EXIT_BAD_INPUT, one_line(exc.format_message()) + hint
    if isinstance(exc, (KeyboardInterrupt, Interrupted, click.exceptions.Abort)):
        cause = exc.__cause__ or exc.__context__
        what = (
            "terminated"
            if isinstance(exc, Terminated) or isinstance(cause, Terminated)
            else "interrupted"
        )
        return EXIT_INTERRUPTED, f"{what}; no output was written"
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_BAD_INPUT, one_line(f"{where}{exc.strerror or errno.errorcode.get(exc.errno)}")
    if isinstance(exc, MemoryError):
        return EXIT_BAD_INPUT, "out of memory: the input is too large for this machine"
    return EXIT_INTERNAL, one_line(
        f"internal error (a bug in spikeport, please report it): {type(exc).__name__}: {exc}",
        300,
    ) + f"; run with {TRACEBACK_ENV}=1 or 'spikeport --debug ...' to see the traceback"
