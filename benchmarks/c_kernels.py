"""C kernels against an int8 ANN of the same weights (issue #21), on the same QEMU harness.

For digits_cnn and digits_mlp: spikeport's C (quantize --target c --max-T 8, emit with its
defaults: the layer-major schedule for these feed-forward graphs, event-driven synapses on
their bit-packed spikes) at T = 1, 2, 4, 8, and the int8 ANN anchor of benchmarks/int8_ann.py
(TFLite-style quantization, kernels written as TFLite Micro's reference kernels), both
compiled at -Os and -O2 for a Cortex-M3: instructions per inference (QEMU, counted per
function), model.o flash and RAM, and the SNN / ANN instruction ratio. The anchor's accuracy
comes from its numpy twin, checked equal to its host build on the test set.

    .venv/bin/python benchmarks/run.py --only c_kernels
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from int8_ann import Int8Ann

from spikeport.convert import convert
from spikeport.quantize import get_profile, quantize
from spikeport.targets import emit
from spikeport.targets.c import c_inputs
from spikeport.targets.c.flash import arm_size, instructions_per_inference
from spikeport.targets.c.run import run_host

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
TS = (1, 2, 4, 8)
OPTS = {
    "-Os": "-Os -ffunction-sections -fdata-sections",
    "-O2": "-O2 -ffunction-sections -fdata-sections",
}
MODELS = ("digits_cnn", "digits_mlp")


def _measure(outdir: Path, inputs: list[np.ndarray], ts: tuple[int, ...], opt: str) -> dict:
    for f in list(outdir.glob("*.o")) + list(outdir.glob("*.elf")):
        f.unlink()
    os.environ["ARM_OPT"] = OPTS[opt]  # the emitted Makefile's optimisation flags
    try:
        size = arm_size(outdir)
        cost = {t: instructions_per_inference(outdir, inputs, t)["total"] for t in ts}
    finally:
        del os.environ["ARM_OPT"]
    return {
        "flash_bytes": size["flash_bytes"],
        "ram_bytes": size["ram_bytes"],
        "instructions": cost,
    }


def run(work: Path, log: Any = print) -> dict[str, Any]:
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        return {"skipped": "gcc-arm-none-eabi / qemu-system-arm not installed"}
    calib_path = EX / "digits_calib.npz"
    calib, test = np.load(calib_path)["x"], np.load(EX / "digits_test.npz")
    rows = []
    for model in MODELS:
        log(f"c_kernels: {model}: SNN C and its int8 ANN anchor on QEMU")
        snn = convert(EX / f"{model}.onnx", calib_path, timesteps=max(TS))
        q = quantize(snn, calib, get_profile("c"), max_timesteps=max(TS))
        snn_dir, ann_dir = work / f"{model}_c_kernels", work / f"{model}_int8_ann"
        shutil.rmtree(snn_dir, ignore_errors=True)
        manifest = emit(q, "c", snn_dir)
        ann = Int8Ann(EX / f"{model}.onnx", calib)
        ann.write_c(ann_dir)
        codes = ann.codes(test["x"])
        twin = ann.run(codes)
        host = run_host(ann_dir, [codes.astype(np.int8)], 1, [], twin.shape[1])
        assert (host.acc[0] == twin).all(), "the int8 ANN's C differs from its numpy twin"
        first = test["x"][:1]
        row: dict[str, Any] = {
            "model": model,
            "int8_ann_accuracy": float((twin.argmax(1) == test["y"]).mean()),
            "kernels": {k: v["kernel"] for k, v in manifest["summary"]["size"]["kernels"].items()},
            "schedule": manifest["summary"]["size"]["schedule"],
        }
        for opt in OPTS:
            s = _measure(snn_dir, c_inputs(q, first), TS, opt)
            a = _measure(ann_dir, [ann.codes(first).astype(np.int8)], (1,), opt)
            row[opt] = {
                "snn": s,
                "int8_ann": {**a, "instructions": a["instructions"][1]},
                "ratio": {t: s["instructions"][t] / a["instructions"][1] for t in TS},
                "ram_ratio": s["ram_bytes"] / a["ram_bytes"],
            }
        rows.append(row)
    return {"T": list(TS), "board": "qemu-mps2-an385 (Cortex-M3)", "rows": rows}
