"""emit, verify and flash: the verbs that reach targets (DESIGN.md section 5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from spikeport import batch
from spikeport.cli.main import QUIET, TIMESTEPS, main, positive_int, say
from spikeport.data import check_token_ids, load_data
from spikeport.errors import BadInput
from spikeport.fileio import atomic_output
from spikeport.ir import load
from spikeport.progress import progress
from spikeport.targets import check_emit_dir, discover, emit, read_manifest, verify
from spikeport.targets.c.boards import BOARDS
from spikeport.targets.c.emit import KERNEL_MODES, SCHEDULES

TARGET_NAMES = sorted(discover())


def output_dir(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Option callback: emit's directory is checked when the arguments are parsed."""
    check_emit_dir(value)
    return value


@main.command("emit")
@click.argument("model")
@click.option("--target", type=click.Choice(TARGET_NAMES), required=True)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    callback=output_dir,
    help="Output directory (new, empty, or written by emit before).",
)
@click.option(
    "--board",
    type=click.Choice(sorted(BOARDS)),
    default=None,
    help="C target: refuse, before writing, a model that does not fit this board's flash/RAM.",
)
@click.option(
    "--kernels",
    type=click.Choice(KERNEL_MODES),
    default=None,
    help="C target: 'auto' (default) runs fast kernels where the calibration activity makes "
    "them cheaper (event-driven synapses); 'events' runs every spike-reading layer "
    "event-driven; 'reference' keeps the reference loops everywhere (step-major).",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=None,
    help="C target: 'auto' (default) runs a feed-forward graph layer-major (one layer for all "
    "T steps, then the next: less RAM) where every op allows it; 'step' keeps step-major.",
)
@click.option(
    "--max-T",
    "max_timesteps",
    type=positive_int(),
    default=None,
    help="C target: the most timesteps the firmware runs (default and upper limit: the max-T "
    "quantize proved). Packed spikes, scratch and state are sized for it; spk_run, verify and "
    "flash refuse more.",
)
@QUIET
def emit_cmd(
    model: str,
    target: str,
    output: str,
    board: str | None,
    kernels: str | None,
    schedule: str | None,
    max_timesteps: int | None,
    quiet: bool,
) -> None:
    """Write MODEL (quantized) as a deployable TARGET into a directory."""
    options = dict(board=board, kernels=kernels, schedule=schedule, max_timesteps=max_timesteps)
    manifest = emit(load(model), target, output, **options)
    size = manifest["summary"].get("size")
    detail = ""
    if size:
        detail = (
            f", model data {size['flash_bytes_model_data']} B flash, "
            f"state {size['ram_bytes_state']} B RAM"
        )
        if "schedule" in size:
            detail += f", {size['schedule']['schedule']}"
        if "max_timesteps" in size:
            detail += f", for T <= {size['max_timesteps']}"
    if size and "board" in size:
        b = size["board"]
        detail += f"; fits {b['name']} ({b['flash_bytes']} B flash, {b['ram_bytes']} B RAM)"
    say(quiet, f"{output}: target {target}{detail}")
    for note in manifest["summary"].get("notes", []):  # what the target cannot say in files only
        say(quiet, f"note: {note}")


@main.command("verify")
@click.argument("model")
@click.argument("outdir")
@click.option("--data", required=True, help="Inputs .npz (key x).")
@click.option(
    "-n", "count", type=positive_int(), default=32, show_default=True, help="Inputs to run."
)
@click.option(
    "-T",
    "timesteps",
    type=TIMESTEPS,
    default=8,
    show_default=True,
    help="Steps per input; every step is compared (at most the steps the C target was "
    "emitted for: more is refused).",
)
@QUIET
def verify_cmd(model: str, outdir: str, data: str, count: int, timesteps: int, quiet: bool) -> None:
    """Run the target in OUTDIR and compare it with the simulator, bit for bit (exit 1 if not)."""
    graph = load(model)
    x = batch.take(load_data(data, graph.inputs).x, slice(count))
    check_token_ids(graph, x, data)
    with progress(batch.size(x), "verify", quiet) as advance:
        res = verify(graph, outdir, x, T=timesteps, progress=advance)
    target = read_manifest(outdir)["target"]
    runner = f", run by {res['runner']}" if res.get("runner") else ""
    say(
        quiet,
        f"{res.get('match', 'bit-exact')}: {target} target equals the simulator on "
        f"{res['samples']} inputs x "
        f"{res['timesteps']} steps (every layer's spikes and the output accumulators{runner})",
    )


@main.command("flash")
@click.argument("outdir")
@click.option("--board", required=True, help="qemu-mps2-an385, or a pyOCD target name.")
@click.option("--data", default=None, help="Test inputs .npz (default: random int8 codes).")
@click.option("-n", "count", type=positive_int(), default=20, show_default=True)
@click.option("-T", "timesteps", type=TIMESTEPS, default=8, show_default=True)
@click.option("--count-instructions/--no-count-instructions", default=True, show_default=True)
@QUIET
def flash_cmd(
    outdir: str,
    board: str,
    data: str | None,
    count: int,
    timesteps: int,
    count_instructions: bool,
    quiet: bool,
) -> None:
    """Run OUTDIR (C target) on a board: QEMU runs and compares with the simulator."""
    from spikeport.targets.c import check_timesteps
    from spikeport.targets.c.flash import QEMU_BOARD, flash_pyocd, flash_qemu

    if read_manifest(outdir)["target"] != "c":
        raise BadInput(f"flash takes a C target directory (emit --target c); '{outdir}' is not")
    out = Path(outdir)
    if board != QEMU_BOARD:
        note = check_board(board)
        try:
            res = flash_pyocd(out, board)
        except BadInput as e:
            raise BadInput(f"{e}; {note}" if note else str(e)) from None
        say(quiet, f"programmed {res['programmed']} on {board}")
        return
    graph = load(out / "model.spk")
    check_timesteps(graph, out, timesteps)  # before the run is announced
    x = load_data(data, graph.inputs).x if data else None
    if x is not None:
        check_token_ids(graph, x, data)
    say(quiet, f"running {count} inputs x {timesteps} steps on QEMU {board} ...")
    report = flash_qemu(out, x, count, timesteps, count_instructions)
    with atomic_output(out / "flash_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    size = report["model_o"]
    say(
        quiet,
        f"bit-exact on Cortex-M3 (QEMU): {report['samples']} inputs x {timesteps} steps; "
        f"model.o flash {size['flash_bytes']} B, RAM {size['ram_bytes']} B",
    )
    if "instructions_per_inference" in report:
        say(
            quiet,
            f"{report['instructions_per_inference']} instructions per inference "
            f"(T={timesteps}; {report['instructions_note']})",
        )


BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_board(board: str) -> str:
    """Refuse a board that cannot be a pyOCD target name; return a note (or '') when pyOCD
    knows no such target among its built-in ones and the installed packs (a pack may still
    be missing: the probe is asked first, and its error carries the note)."""
    from spikeport.targets.c.flash import QEMU_BOARD

    if not BOARD_NAME.fullmatch(board):
        raise BadInput(
            f"unknown board '{board}': give {QEMU_BOARD} or a pyOCD target name "
            "(`pyocd list --targets`)"
        )
    try:
        from pyocd.target import TARGET
    except ImportError:
        return ""
    known = {k.lower() for k in TARGET}
    try:  # targets of installed CMSIS packs
        from pyocd.target.pack.pack_target import ManagedPacks

        known |= {t.part_number.lower() for t in ManagedPacks.get_installed_targets()}
    except Exception:  # noqa: BLE001 - pack support is optional in pyOCD
        pass
    if board.lower() in known:
        return ""
    return (
        f"pyOCD knows no target '{board}': check the name (`pyocd list --targets`) or "
        f"install its pack (`pyocd pack install {board}`)"
    )
