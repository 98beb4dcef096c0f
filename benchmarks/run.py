"""spikeport benchmarks: `make bench` runs every section, in one process, on one machine.

    make bench                                    # installs SpikingJelly for benchmarks, then:
    .venv/bin/python benchmarks/run.py            # every section
    .venv/bin/python benchmarks/run.py --only accuracy --only c_target

Sections (each writes benchmarks/results/<name>.json; then benchmarks/report.py writes
benchmarks/RESULTS.md and benchmarks/accuracy_vs_T.png from those files):

  accuracy    accuracy vs T of spikeport (conversion only; fine-tuned) and of SpikingJelly's
              ann2snn recipes, same models, same calibration and test splits
  throughput  reference simulator, integer and float modes, against SpikingJelly's torch
              simulation of the same network (batch 256, T = 8), ratios from one run
  cost        convert and quantize time and peak memory, digits examples and ResNet-18-shaped
              generated networks (random weights, 32x32), each stage in a fresh process
  c_target    C on a Cortex-M3 under QEMU: flash, RAM, instructions per inference

Wall-clock figures are from this machine in this run; nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_sj  # noqa: E402
import report  # noqa: E402
from resnet import resnet18_onnx  # noqa: E402

from spikeport.convert import convert  # noqa: E402
from spikeport.data import load_data  # noqa: E402
from spikeport.eval import evaluate  # noqa: E402
from spikeport.finetune import Settings, finetune  # noqa: E402
from spikeport.quantize import get_profile, quantize  # noqa: E402
from spikeport.sim import simulate  # noqa: E402

ROOT = HERE.parent
EX = ROOT / "examples"
RESULTS = HERE / "results"
WORK = HERE / "work"
CALIB, TRAIN, TEST = (EX / f"digits_{s}.npz" for s in ("calib", "train", "test"))

TS = [1, 2, 4, 8, 16, 32]
MODELS = ["cnn", "mlp", "vit"]
FT_T, FT_EPOCHS, FT_SEED = 4, 20, 0  # docs/finetune.md's command: -T 4, defaults otherwise
BATCH, SIM_T, REPEATS, MIN_TIMING = 256, 8, 3, 0.2
RESNET_WIDTHS, RESNET_CALIB = [16, 32, 64], 64
C_T = 4


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def test_data(graph: Any) -> Any:
    return load_data(TEST, graph.inputs, labels=True, n_classes=10)


def int_eval(graph: Any, model: str) -> dict[str, Any]:
    """quantize --target sim, then eval in integer mode on the test split at every T."""
    q = quantize(graph, np.load(CALIB)["x"], get_profile("sim"))
    rep = evaluate(q, test_data(graph), TS, "int", str(EX / f"digits_{model}.onnx"))
    return {
        "ann": rep["ann"]["accuracy"],
        "accuracy": {r["T"]: r["accuracy"] for r in rep["records"]},
        "agreement_with_ann": {r["T"]: r["agreement_with_ann"] for r in rep["records"]},
    }


# ---------------------------------------------------------------------------------------------
# 1. accuracy vs T


def accuracy() -> dict[str, Any]:
    x_test, y_test = np.load(TEST)["x"], np.load(TEST)["y"]
    x_calib = torch.from_numpy(np.load(CALIB)["x"])
    sj = peer_sj.available()
    if not sj:
        log("SpikingJelly is not installed (benchmarks/install_spikingjelly.sh): no peer rows")
    models: dict[str, Any] = {}
    for model in MODELS:
        log(f"accuracy: digits_{model}: spikeport convert -> quantize -> eval (int)")
        snn = convert(EX / f"digits_{model}.onnx", CALIB)
        conv = int_eval(snn, model)
        rows = [{"method": "spikeport", "what": "convert (defaults), integer mode", **conv}]
        log(f"accuracy: digits_{model}: spikeport finetune T={FT_T}, {FT_EPOCHS} epochs")
        train = load_data(TRAIN, snn.inputs, labels=True, n_classes=10)
        val = load_data(CALIB, snn.inputs, labels=True, n_classes=10)
        t0 = time.perf_counter()
        res = finetune(
            snn, train, Settings(T=FT_T, epochs=FT_EPOCHS, seed=FT_SEED), val=val, quiet=True
        )
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "method": "spikeport_finetuned",
                "what": f"finetune -T {FT_T} (--epochs {FT_EPOCHS}, --seed {FT_SEED}, "
                "--val calib), integer mode",
                "finetune_seconds": seconds,
                **int_eval(res.graph, model),
            }
        )
        entry: dict[str, Any] = {"ann": conv["ann"], "rows": rows}
        if sj and model == "vit":
            net, diff = peer_sj.vit_from_onnx(EX / "digits_vit.onnx", x_test)
            entry["sj_ann_max_abs_logit_diff_vs_onnxruntime"] = diff
            log("accuracy: digits_vit: SpikingJelly STA spiking encoder, one conversion per T")
            acc, seconds = peer_sj.sta_accuracy(net, x_calib, x_test, y_test, TS)
            rows.append(
                {
                    "method": "sj_sta_encoder",
                    "what": peer_sj.STA_WHAT,
                    "convert_seconds": seconds,
                    "accuracy": acc,
                }
            )
        if sj and model in ("cnn", "mlp"):
            ann, diff = peer_sj.ann_from_onnx(model, EX / f"digits_{model}.onnx", x_test)
            entry["sj_ann_max_abs_logit_diff_vs_onnxruntime"] = diff
            for key, (what, make) in peer_sj.recipes(x_calib).items():
                log(f"accuracy: digits_{model}: SpikingJelly {key}")
                net, seconds = peer_sj.convert(ann, make())
                acc = peer_sj.accuracy_vs_t(net, x_test, y_test, TS)
                rows.append(
                    {"method": key, "what": what, "convert_seconds": seconds, "accuracy": acc}
                )
        models[f"digits_{model}"] = entry
    return {
        "timesteps": TS,
        "spikingjelly": peer_sj.version() if sj else None,
        "models": models,
        "splits": {"calibration": CALIB.name, "training": TRAIN.name, "test": TEST.name},
    }


# ---------------------------------------------------------------------------------------------
# 2. simulator throughput


def best_rates(runners: dict[str, Callable[[], Any]], work: int) -> dict[str, float]:
    """work / best seconds per call, of REPEATS timings each, the runners interleaved
    round-robin so that a change of machine load during the run hits every one alike. A
    timing repeats a fast call until it lasts MIN_TIMING seconds (timer and load noise)."""
    loops = {}
    for key, run in runners.items():
        t0 = time.perf_counter()
        run()  # warm-up, and how many calls make one timing
        loops[key] = max(1, math.ceil(MIN_TIMING / (time.perf_counter() - t0)))
    best = {k: float("inf") for k in runners}
    for _ in range(REPEATS):
        for key, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(loops[key]):
                run()
            best[key] = min(best[key], (time.perf_counter() - t0) / loops[key])
    return {k: work / s for k, s in best.items()}


def sim_runner(graph: Any, x: np.ndarray, mode: str) -> Callable[[], Any]:
    return lambda: simulate(graph, x, SIM_T, mode, batch_size=BATCH)


def throughput() -> dict[str, Any]:
    sj = peer_sj.available()
    x_test = np.load(TEST)["x"]
    rows = []
    for model in MODELS:
        log(f"throughput: digits_{model} (batch {BATCH}, T = {SIM_T}, best of {REPEATS})")
        q = quantize(
            convert(EX / f"digits_{model}.onnx", CALIB), np.load(CALIB)["x"], get_profile("sim")
        )
        xb = np.resize(x_test, (BATCH,) + x_test.shape[1:])
        runners = {f"spikeport_{mode}": sim_runner(q, xb, mode) for mode in ("int", "float")}
        if sj and model in ("cnn", "mlp"):
            ann, _ = peer_sj.ann_from_onnx(model, EX / f"digits_{model}.onnx", x_test)
            net, _ = peer_sj.convert(
                ann, peer_sj.recipes(torch.from_numpy(np.load(CALIB)["x"]))["sj_channel_half"][1]()
            )
            for step_mode in ("s", "m"):
                runners[f"sj_{step_mode}"] = peer_sj.runner(net, xb, SIM_T, step_mode)
        if sj and model == "vit":
            net, _ = peer_sj.vit_from_onnx(EX / "digits_vit.onnx", x_test)
            x_calib = torch.from_numpy(np.load(CALIB)["x"])
            runners["sj_m"] = peer_sj.sta_runner(net, x_calib, xb, SIM_T)
        rates = best_rates(runners, BATCH * SIM_T)
        row: dict[str, Any] = {"model": f"digits_{model}", "samples_x_steps_per_s": rates}
        if "sj_m" in rates:
            sj_best = max(rates.get("sj_s", 0.0), rates["sj_m"])
            row["ratio_vs_spikingjelly"] = {
                "int": rates["spikeport_int"] / sj_best,
                "float": rates["spikeport_float"] / sj_best,
            }
        rows.append(row)
    return {
        "batch": BATCH,
        "T": SIM_T,
        "repeats": REPEATS,
        "min_timing_s": MIN_TIMING,
        "spikingjelly_network": {"cnn, mlp": "sj_channel_half", "vit": "sj_sta_encoder"}
        if sj
        else None,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------
# 3. conversion and quantisation cost


def stage(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "stage.py"), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cost() -> dict[str, Any]:
    work = WORK / "cost"
    work.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path, Path, int]] = []
    import onnx

    for model in ("mlp", "cnn", "vit"):
        path = EX / f"digits_{model}.onnx"
        params = sum(int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)
        cases.append((f"digits_{model}", path, CALIB, params))
    calib = work / f"random_calib_{RESNET_CALIB}.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, x=rng.standard_normal((RESNET_CALIB, 3, 32, 32)).astype(np.float32))
    for width in RESNET_WIDTHS:
        path = work / f"resnet18_w{width}.onnx"
        cases.append((f"resnet18_w{width} (32x32)", path, calib, resnet18_onnx(path, width)))
    rows = []
    for name, path, cal, params in cases:
        log(f"cost: {name}: convert, then quantize, each in a fresh process")
        spk, spk_q = work / f"{path.stem}.spk", work / f"{path.stem}_q.spk"
        conv = stage("convert", str(path), str(cal), str(spk))
        quant = stage("quantize", str(spk), str(cal), str(spk_q), "4", "4")
        rows.append(
            {
                "model": name,
                "parameters": params,
                "calibration_samples": len(np.load(cal)["x"]),
                "convert": conv,
                "quantize": {k: v for k, v in quant.items() if k != "sim_int"},
                "sim_int": quant["sim_int"],
            }
        )
    return {"rows": rows, "resnet_calibration": f"{RESNET_CALIB} N(0, 1) images, seed 0"}


# ---------------------------------------------------------------------------------------------
# 4. C target on Cortex-M3


def c_target() -> dict[str, Any]:
    import shutil

    from spikeport.errors import SpikeportError
    from spikeport.targets import emit
    from spikeport.targets.c.flash import flash_qemu

    tools = shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")
    rows = []
    for model in MODELS:
        log(f"c_target: digits_{model}: emit C, run on QEMU mps2-an385 (T = {C_T})")
        q = quantize(
            convert(EX / f"digits_{model}.onnx", CALIB), np.load(CALIB)["x"], get_profile("sim")
        )
        ann_bytes = sum(
            n.params["weight_q"].size + 4 * n.params["bias_q"].size
            for n in q.nodes
            if "weight_q" in n.params and "bias_q" in n.params
        )
        row: dict[str, Any] = {"model": f"digits_{model}", "int8_ann_weight_bytes": ann_bytes}
        outdir = WORK / f"digits_{model}_c"
        shutil.rmtree(outdir, ignore_errors=True)
        try:
            emit(q, "c", outdir)
        except SpikeportError as e:  # a graph the target cannot hold: refused by name
            row["refused"] = str(e)
            rows.append(row)
            continue
        if not tools:
            row["skipped"] = "arm-none-eabi-gcc / qemu-system-arm not installed"
            rows.append(row)
            continue
        rep = flash_qemu(outdir, None, 4, C_T)
        row.update(
            {
                "T": C_T,
                "bit_exact_samples": rep["samples"],
                "flash_bytes": rep["model_o"]["flash_bytes"],
                "ram_bytes": rep["model_o"]["ram_bytes"],
                "model_o": rep["model_o"],
                "instructions_per_inference": rep["instructions_per_inference"],
            }
        )
        rows.append(row)
    return {"board": "qemu-mps2-an385 (Cortex-M3)", "T": C_T, "rows": rows}


# ---------------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "accuracy": accuracy,
    "throughput": throughput,
    "cost": cost,
    "c_target": c_target,
}


def machine() -> dict[str, Any]:
    pkgs = ("numpy", "torch", "onnxruntime")
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **{p: version(p) for p in pkgs},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=list(SECTIONS), help="repeatable")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    names = args.only or list(SECTIONS)
    command = (
        "make bench"
        if not args.only
        else "benchmarks/run.py " + " ".join(f"--only {n}" for n in names)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for name in names:
        load, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S")
        t0 = time.perf_counter()
        data = SECTIONS[name]()
        doc = {
            "benchmark": name,
            "command": command,
            "started": started,
            "seconds": time.perf_counter() - t0,
            "load_average_at_start": load,
            "machine": machine(),
            **data,
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        log(f"{name}: {doc['seconds']:.0f} s -> benchmarks/results/{name}.json")
    report.write(RESULTS, HERE)
    log(
        f"done in {time.perf_counter() - t_all:.0f} s: benchmarks/RESULTS.md, "
        "benchmarks/accuracy_vs_T.png"
    )


if __name__ == "__main__":
    main()
