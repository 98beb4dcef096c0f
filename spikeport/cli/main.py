"""The `spikeport` command line: click commands that call the library and map its errors to
exit codes (0 ok, 1 a check failed, 2 bad input or usage). No logic lives here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from spikeport import __version__
from spikeport.errors import SpikeportError

QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")


def run_safely(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SpikeportError into one line on stderr and its exit code; nothing else is caught."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SpikeportError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def parse_timesteps(text: str) -> list[int]:
    from spikeport.errors import BadInput

    try:
        ts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BadInput(f"-T '{text}' is not a comma-separated list of integers") from None
    if not ts or min(ts) < 1:
        raise BadInput(f"-T '{text}' needs positive integers")
    return sorted(set(ts))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spikeport")
def main() -> None:
    """Turn a pretrained ANN (ONNX) into a calibrated, integer spiking network."""


from spikeport.cli import commands, finetune_cmd, target_cmds  # noqa: E402,F401  (registers the verbs)
