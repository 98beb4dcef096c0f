"""Build and run the emitted C (host compiler, or Cortex-M3 under QEMU) and read its trace."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeport.errors import BadInput, SpikeportError

QEMU_TIMEOUT_S = 300


class ToolMissing(SpikeportError):
    """A compiler or emulator the command needs is not installed."""


@dataclass
class Trace:
    """What the harness printed: spikes[probe] (T, N, size) int8, acc (T, N, n_out) int64."""

    spikes: list[np.ndarray]
    acc: np.ndarray


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"'{tool}' is not installed (Debian: see the C target's README)")
    return path


def make(outdir: Path, *targets: str, env: dict[str, str] | None = None) -> None:
    """Run the emitted Makefile; a failed build is reported with the compiler's first error."""
    need("make")
    res = subprocess.run(
        ["make", "-s", "-C", str(outdir), *targets], capture_output=True, text=True, env=env
    )
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr + res.stdout).splitlines() if "error" in ln.lower()]
        raise BadInput(
            f"{outdir}: `make {' '.join(targets)}` failed: "
            f"{(lines or (res.stderr + res.stdout).splitlines() or ['?'])[0].strip()}"
        )


VALUES = {ord("+"): 1, ord("-"): -1, ord("."): 0}
_LUT = np.zeros(256, np.int8)
for _k, _v in VALUES.items():
    _LUT[_k] = _v


def _spike_field(field: str, size: int) -> np.ndarray:
    if len(field) == 2 * size:  # graded: two hex digits a spike, its int8 count
        return np.frombuffer(bytes.fromhex(field), np.int8)
    return _LUT[np.frombuffer(field.encode(), np.uint8)]


def parse_trace(text: str, n: int, T: int, sizes: list[int], n_out: int) -> Trace:
    """Read the harness's `P k t p <spikes>` and `S k t | <acc>` lines, in whatever order the
    model's schedule printed them (step by step, or layer by layer); every one must be there."""
    spikes = [np.zeros((T, n, s), np.int8) for s in sizes]
    acc = np.zeros((T, n, n_out), np.int64)
    seen_probes, seen_steps = set(), 0
    for line in text.splitlines():
        if line.startswith("P "):
            _, k, t, p, field = line.split(" ", 4)
            kk, tt, pp = int(k), int(t) - 1, int(p)
            spikes[pp][tt, kk] = _spike_field(field.strip(), sizes[pp])
            seen_probes.add((kk, tt, pp))
        elif line.startswith("S "):
            head, _, tail = line.partition(" |")
            _, k, t = head.split(" ")
            acc[int(t) - 1, int(k)] = [int(v) for v in tail.split()]
            seen_steps += 1
    if seen_steps != n * T:
        raise BadInput(f"the harness printed {seen_steps} of {n * T} expected steps")
    if len(seen_probes) != n * T * len(sizes):
        raise BadInput(
            f"the harness printed {len(seen_probes)} of {n * T * len(sizes)} expected probes"
        )
    return Trace(spikes, acc)


def input_bytes(inputs: list[np.ndarray]) -> bytes:
    """The harness's stdin: each sample's spk_input_t fields in order, raw little-endian."""
    n = len(inputs[0])
    flat = [a.reshape(n, -1) for a in inputs]
    return b"".join(
        b"".join(a[k].astype(a.dtype.newbyteorder("<")).tobytes() for a in flat) for k in range(n)
    )


def run_host(outdir: Path, inputs: list[np.ndarray], T: int, sizes: list[int], n_out: int) -> Trace:
    """Run the host harness on `inputs` (one (N, ...) array per spk_input_t field, int8 or
    int32) for T steps."""
    need("cc")
    make(outdir, "harness")
    res = subprocess.run(
        [str(outdir / "harness"), str(T)],
        input=input_bytes(inputs),
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise BadInput(f"{outdir}/harness exited {res.returncode}: {res.stderr.decode()[:200]}")
    return parse_trace(res.stdout.decode(), len(inputs[0]), T, sizes, n_out)


def write_inputs_h(outdir: Path, inputs: list[np.ndarray], T: int) -> None:
    n = len(inputs[0])

    def field(a: np.ndarray) -> str:
        return "{" + ", ".join(str(int(v)) for v in a.reshape(-1)) + "}"

    rows = ",\n    ".join("{" + ", ".join(field(a[k]) for a in inputs) + "}" for k in range(n))
    (outdir / "inputs.h").write_text(
        "/* Inputs embedded by spikeport flash (the fields of spk_input_t). */\n"
        f"#define SPK_N_SAMPLES {n}\n#define SPK_T {T}\n"
        f"static const spk_input_t spk_inputs[SPK_N_SAMPLES] = {{\n    {rows}\n}};\n"
    )


def qemu_command(elf: Path, *extra: str) -> list[str]:
    return [
        need("qemu-system-arm"),
        "-M",
        "mps2-an385",
        "-nographic",
        "-semihosting-config",
        "enable=on,target=native",
        *extra,
        "-kernel",
        str(elf),
    ]


def run_qemu(outdir: Path, inputs: list[np.ndarray], T: int, sizes: list[int], n_out: int) -> Trace:
    need("arm-none-eabi-gcc")
    write_inputs_h(outdir, inputs, T)
    make(outdir, "firmware.elf")
    res = subprocess.run(
        qemu_command(outdir / "firmware.elf"),
        capture_output=True,
        timeout=QEMU_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise BadInput(f"QEMU run exited {res.returncode}: {res.stderr.decode()[:200]}")
    return parse_trace(res.stdout.decode(), len(inputs[0]), T, sizes, n_out)
