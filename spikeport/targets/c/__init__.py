"""Microcontroller C target: plain C99, bit-exact with the integer reference simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spikeport.batch import Batch
from spikeport.errors import BadInput
from spikeport.ir.artifact import save
from spikeport.ir.graph import Graph
from spikeport.quantize.profiles import Profile
from spikeport.sim.simulator import encode_inputs
from spikeport.targets import Target, read_manifest, register_target
from spikeport.targets.c.emit import C_OPS, NUMPY_TYPE, emit_c, input_ctype
from spikeport.targets.c.run import run_host
from spikeport.targets.compare import check_equal, check_in_batches, reference

# C has int32 arithmetic everywhere; the limits are those of the emitted types: int8 weights,
# int32 bias and state, add multipliers up to int32 (products in int64), and a fan-in that keeps
# index arithmetic in int.
PROFILE = Profile(
    "c",
    weight_bits=8,
    bias_bits=32,
    state_bits=32,
    input_bits=8,
    mult_bits=32,
    signed_spikes=True,
    max_spike_bits=7,  # spike buffers are int8: a count k up to 127
    max_fanin=1 << 20,
    ops=frozenset(C_OPS),
    record_activity=True,
)

DEFAULT_T = 8
BATCH = 256


def emit(
    graph: Graph,
    outdir: Path,
    board: str | None = None,
    kernels: str = "auto",
    schedule: str = "auto",
    max_timesteps: int | None = None,
) -> dict[str, Any]:
    summary = emit_c(graph, outdir, board, kernels, schedule, max_timesteps)
    save(graph, outdir / "model.spk")  # flash compares with the simulator without the user's file
    return summary


def verify(
    graph: Graph,
    outdir: Path,
    x: Batch,
    T: int = DEFAULT_T,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Build the host harness, run x, compare every step's spikes and accumulators."""
    check_timesteps(graph, outdir, T)
    n = check_in_batches(
        x,
        BATCH,
        lambda chunk, first: check_one_batch(graph, outdir, chunk, T, run_host, first),
        progress,
    )
    return {"samples": n, "timesteps": T, "runner": "host cc"}


def check_timesteps(graph: Graph, outdir: Path, T: int) -> None:
    """Refuse (not clamp: a check of fewer steps than asked would pass unnoticed) a run of more
    steps than the firmware in `outdir` was emitted for: its buffers hold no more, and its
    spk_run returns -1."""
    size = read_manifest(outdir)["summary"].get("size", {})
    proven = int(graph.meta["quantization"]["max_timesteps"])
    most = int(size.get("max_timesteps", proven))  # emitted before --max-T: the proven max-T
    if T > most:
        more = (
            f", or emit again with --max-T {T}"
            if T <= proven
            else f" (the graph is proven free of overflow for T <= {proven} only)"
        )
        raise BadInput(
            f"-T {T} is more than the {most} steps '{outdir}' was emitted for "
            f"(emit --max-T {most}): run -T {most} or less{more}"
        )


def c_inputs(graph: Graph, x: Batch) -> list[np.ndarray]:
    """The fields of spk_input_t for x: int8 codes of float inputs, int32 integer inputs."""
    values = encode_inputs(graph, x)
    return [values[t.name].astype(NUMPY_TYPE[input_ctype(t)]) for t in graph.inputs]


def check_one_batch(
    graph: Graph,
    outdir: Path,
    x: Batch,
    T: int,
    runner: Any,
    first: int = 0,
    target: str = "C (host)",
) -> None:
    _, ref_spikes, ref_acc = reference(graph, x, T)
    sizes = [s.shape[-1] for s in ref_spikes.values()]
    trace = runner(outdir, c_inputs(graph, x), T, sizes, ref_acc.shape[-1])
    got = dict(zip(ref_spikes, trace.spikes, strict=True))
    check_equal(target, ref_spikes, ref_acc, got, trace.acc, first)


TARGET = register_target(
    Target("c", PROFILE, emit, verify, "C99 for microcontrollers (host, Cortex-M3/QEMU)")
)
