"""Spine benchmarks: conversion/quantization cost and reference-simulator throughput.

    make bench        # writes benchmarks/results/spine.json and benchmarks/RESULTS.md

Times are wall-clock on this machine, measured in one run; memory is the tracemalloc peak
(Python and numpy allocations) of each stage. Nothing here is asserted in tests.
"""

from __future__ import annotations

import json
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spikeport.convert import convert
from spikeport.ir.graph import Graph
from spikeport.quantize import get_profile, quantize
from spikeport.sim import simulate

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
OUT = ROOT / "benchmarks"
BATCH, T = 256, 8


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak MiB) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def throughput(graph, x: np.ndarray, mode: str, repeats: int = 3) -> float:
    """Samples x timesteps per second, batch 256, best of `repeats`."""
    xb = np.resize(x, (BATCH,) + x.shape[1:])
    best = min(
        measured(lambda: simulate(graph, xb, T, mode, batch_size=BATCH))[1] for _ in range(repeats)
    )
    return BATCH * T / best


def c_target(graph: Graph, name: str, T: int = 4) -> dict[str, Any] | None:
    """Compiled Cortex-M3 size of the model and instructions per inference under QEMU."""
    import shutil

    from spikeport.targets import emit
    from spikeport.targets.c.flash import flash_qemu

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        return None
    outdir = OUT / "work" / f"{name}_c"
    emit(graph, "c", outdir)
    report = flash_qemu(outdir, None, 4, T)
    ann_bytes = sum(
        n.params["weight_q"].size + 4 * n.params["bias_q"].size
        for n in graph.nodes
        if "weight_q" in n.params
    )
    return {
        "T": T,
        "flash_bytes": report["model_o"]["flash_bytes"],
        "ram_bytes": report["model_o"]["ram_bytes"],
        "instructions_per_inference": report["instructions_per_inference"],
        "int8_ann_weight_bytes": ann_bytes,
    }


def bench_model(name: str) -> dict[str, Any]:
    onnx_path, calib = EX / f"digits_{name}.onnx", EX / "digits_calib.npz"
    x = np.load(EX / "digits_test.npz")["x"]
    snn, t_conv, m_conv = measured(lambda: convert(onnx_path, calib))
    q, t_q, m_q = measured(lambda: quantize(snn, np.load(calib)["x"], get_profile("sim")))
    return {
        "model": f"digits_{name}",
        "convert_s": t_conv,
        "convert_peak_mib": m_conv,
        "quantize_s": t_q,
        "quantize_peak_mib": m_q,
        "sim_int_samples_x_steps_per_s": throughput(q, x, "int"),
        "sim_float_samples_x_steps_per_s": throughput(q, x, "float"),
        "c_cortex_m3": c_target(q, f"digits_{name}"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Produced by `make bench` (`benchmarks/run.py`); all figures from one run on one machine.",
        "",
        "## Conversion cost and reference simulator throughput",
        "",
        f"Simulator: batch {BATCH}, T = {T}; throughput in samples x timesteps per second.",
        "",
        "| model | convert (s) | convert peak (MiB) | quantize (s) | quantize peak (MiB) "
        "| sim int | sim float | int / float |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["sim_int_samples_x_steps_per_s"] / r["sim_float_samples_x_steps_per_s"]
        lines.append(
            f"| {r['model']} | {r['convert_s']:.2f} | {r['convert_peak_mib']:.1f} | "
            f"{r['quantize_s']:.3f} | {r['quantize_peak_mib']:.1f} | "
            f"{r['sim_int_samples_x_steps_per_s']:.0f} | "
            f"{r['sim_float_samples_x_steps_per_s']:.0f} | {ratio:.2f} |"
        )
    lines += [
        "",
        "## C target on Cortex-M3 (QEMU mps2-an385)",
        "",
        "`model.o` built with arm-none-eabi-gcc -Os -mcpu=cortex-m3 (harness and libc excluded). "
        "Instructions: Thumb-2 instructions one `spk_run()` executes under QEMU, counted from its "
        "exec trace (not cycles).",
        "",
        "| model | T | flash (B) | RAM (B) | instructions / inference | int8 ANN weights + int32 "
        "biases (B) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["c_cortex_m3"]
        if c is None:
            lines.append(f"| {r['model']} | - | toolchain not installed | | | |")
            continue
        lines.append(
            f"| {r['model']} | {c['T']} | {c['flash_bytes']} | {c['ram_bytes']} | "
            f"{c['instructions_per_inference']} | {c['int8_ann_weight_bytes']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = [bench_model(m) for m in ("cnn", "mlp")]
    meta = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    (OUT / "results").mkdir(exist_ok=True)
    (OUT / "results" / "spine.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (OUT / "RESULTS.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
