"""One conversion stage in a fresh process, for time and peak memory (run by benchmarks/run.py).

    .venv/bin/python benchmarks/stage.py convert  MODEL.onnx CALIB.npz OUT.spk
    .venv/bin/python benchmarks/stage.py quantize IN.spk     CALIB.npz OUT.spk [SIM_BATCH SIM_T]

Prints one JSON line: the stage's wall time, the process's peak resident set size
(VmHWM: Python, numpy and onnxruntime's native memory alike) and that peak less the
baseline before the stage (imports, inputs loaded). quantize then optionally runs the
integer simulator on SIM_BATCH calibration samples for SIM_T steps (after the memory is read;
best of two runs).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from spikeport.convert import convert
from spikeport.data import load_data
from spikeport.ir import load, save
from spikeport.quantize import get_profile, quantize
from spikeport.sim import simulate
from spikeport.threads import set_threads


def rss_mib() -> float:
    """Peak resident set of this process so far, MiB: VmHWM, which starts afresh at exec
    (ru_maxrss would carry the parent's peak over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def main(argv: list[str]) -> None:
    stage, src, calib, out = argv[:4]
    set_threads()  # torch: one thread per core, numpy's BLAS: one (spikeport.threads)
    graph = load(src) if stage == "quantize" else None
    x = load_data(calib, graph.inputs).x if graph is not None else None  # images or tokens
    base = rss_mib()
    t0 = time.perf_counter()
    if stage == "convert":
        # keyword options of convert, as JSON (run.py's CONVERT_OPTIONS)
        result = convert(
            src, calib, **json.loads(os.environ.get("SPIKEPORT_CONVERT_OPTIONS", "{}"))
        )
    elif stage == "quantize":
        result = quantize(graph, x, get_profile("sim"))
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    seconds = time.perf_counter() - t0
    peak = rss_mib()
    save(result, out)
    report = {
        "stage": stage,
        "seconds": seconds,
        "peak_rss_mib": peak,
        "baseline_rss_mib": base,
        "peak_above_baseline_mib": peak - base,
    }
    if stage == "quantize" and len(argv) == 6:
        batch, T = int(argv[4]), int(argv[5])
        assert isinstance(x, np.ndarray)
        xb = np.resize(x, (batch,) + x.shape[1:])
        simulate(result, xb[:1], 1, "int")  # warm-up
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            simulate(result, xb, T, "int", batch_size=batch)
            best = min(best, time.perf_counter() - t0)
        report["sim_int"] = {"batch": batch, "T": T, "samples_x_steps_per_s": batch * T / best}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
