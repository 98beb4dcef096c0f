"""`spikeport flash`: run the emitted C on a Cortex-M3 (QEMU mps2-an385) or a real board.

On QEMU it runs the harness firmware on test inputs and compares every step with the
simulator, reports the compiled size of the model (arm-none-eabi-size of model.o, so newlib
and the harness are not counted), and counts the instructions one inference executes.

Instruction counting: QEMU is not cycle-accurate, so no cycles are claimed. The count
firmware (board/count.c) runs spk_run() SPK_RUNS times; QEMU executes it one instruction per
translation block (-singlestep) and logs every block it executes (-d nochain,exec). The log
lines of a 1-run build minus those of a 0-run build are the instructions of one inference of
T steps, start-up and exit excluded. They are Thumb-2 instructions, not cycles.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spikeport.batch import Batch, size, take
from spikeport.errors import BadInput
from spikeport.ir.artifact import load
from spikeport.targets.c import c_inputs, check_one_batch, check_timesteps
from spikeport.targets.c.run import make, need, qemu_command, run_qemu, write_inputs_h
from spikeport.targets.compare import random_inputs

QEMU_BOARD = "qemu-mps2-an385"


def arm_size(outdir: Path) -> dict[str, int]:
    make(outdir, "model.o")
    res = subprocess.run(
        [need("arm-none-eabi-size"), str(outdir / "model.o")],
        capture_output=True,
        text=True,
        check=True,
    )
    text, data, bss = (int(v) for v in res.stdout.splitlines()[1].split()[:3])
    return {
        "text": text,
        "data": data,
        "bss": bss,
        "flash_bytes": text + data,
        "ram_bytes": data + bss,
    }


def _executed(outdir: Path, runs: int) -> Counter[str]:
    """Instructions the count firmware of `runs` inferences executes, per function (QEMU's
    exec log names the function of every block it runs; with -singlestep a block is one
    instruction)."""
    elf = f"count{runs}.elf"
    make(outdir, elf)
    cmd = qemu_command(outdir / elf, "-singlestep", "-d", "nochain,exec", "-D", "/dev/stdout")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    counts: Counter[str] = Counter()
    for line in proc.stdout:
        if line.startswith(b"Trace "):
            counts[line.rsplit(b" ", 1)[-1].strip().decode(errors="replace")] += 1
    if proc.wait() != 0:
        raise BadInput(f"QEMU count run of {elf} exited {proc.returncode}")
    return counts


# libgcc's 64-bit division on cores without it in hardware (Cortex-M3: 32-bit UDIV/SDIV only);
# 64-bit multiplies and shifts are inline instructions.
INT64_HELPERS = ("__aeabi_ldivmod", "__aeabi_uldivmod", "__udivmoddi4", "__divdi3", "__udivdi3")


def instructions_per_inference(outdir: Path, inputs: list[np.ndarray], T: int) -> dict[str, Any]:
    """Instructions of one inference of T steps (a 1-run build minus a 0-run build), with the
    functions that take them."""
    write_inputs_h(outdir, [a[:1] for a in inputs], T)
    per_function = _executed(outdir, 1)
    per_function.subtract(_executed(outdir, 0))
    total = sum(per_function.values())
    helpers = sum(per_function[f] for f in INT64_HELPERS)
    return {
        "total": total,
        "int64_division_helpers": helpers,
        "top_functions": dict(per_function.most_common(8)),
    }


def flash_qemu(outdir: Path, x: Batch | None, n: int, T: int, count: bool = True) -> dict[str, Any]:
    """Run n inputs for T steps on QEMU, compare with the simulator, measure size and cost.
    A T beyond the steps the firmware was emitted for is refused (check_timesteps)."""
    graph = load(outdir / "model.spk")
    check_timesteps(graph, outdir, T)
    inputs = take(x, slice(0, n)) if x is not None else random_inputs(graph, n)
    check_one_batch(graph, outdir, inputs, T, run_qemu, target="C (Cortex-M3, QEMU)")
    report: dict[str, Any] = {
        "board": QEMU_BOARD,
        "samples": size(inputs),
        "timesteps": T,
        "bit_exact": True,
        "model_o": arm_size(outdir),
    }
    if count:
        cost = instructions_per_inference(outdir, c_inputs(graph, inputs), T)
        report["instructions_per_inference"] = cost["total"]
        report["instructions_in_int64_division"] = cost["int64_division_helpers"]
        report["instructions_top_functions"] = cost["top_functions"]
        report["instructions_note"] = (
            "Thumb-2 instructions executed by one spk_run() of T steps under QEMU (not cycles)"
        )
    return report


def flash_pyocd(outdir: Path, board: str) -> dict[str, Any]:
    """Program firmware.elf through pyOCD's Python API onto an attached board."""
    try:
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer
    except ImportError:
        raise BadInput(
            "pyOCD is not installed (pip install pyocd) - needed for real boards"
        ) from None
    if not ConnectHelper.get_all_connected_probes(blocking=False, print_wait_message=False):
        raise BadInput(f"no debug probe attached for board '{board}'")
    session = ConnectHelper.session_with_chosen_probe(
        target_override=board, blocking=False, return_first=True, auto_open=False
    )
    elf = outdir / "firmware.elf"
    if not elf.exists():
        raise BadInput(
            f"{elf} is missing: build it for your board (make firmware, with your "
            "board's linker script in board/)"
        )
    with session:
        FileProgrammer(session).program(str(elf))
    return {"board": board, "programmed": str(elf)}
