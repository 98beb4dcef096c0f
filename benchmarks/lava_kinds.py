"""Lava's two neuron kinds on the digits examples: accuracy, events and message bits.

    .venv/bin/python benchmarks/lava_kinds.py   # writes benchmarks/results/lava_kinds.json
                                                 # and prints the README's Lava table rows

For each digits model (CNN, MLP): convert (conversion only, no fine-tuning), quantize for
Lava's LIF kind ("lava", spikeport.targets.lava.LIF_PROFILE) and as `quantize --target lava`
does (it picks the kind by agreement with the ANN on the calibration data: the sigma-delta
kind "sdn" on both), with --max-T 8 and 12, and evaluate in INTEGER mode on the held-out test
split (540 images) at T = 1..12. Per inference: events (spikes, or graded messages) and
message bits (events x payload bits: 1 for a spike, 24 for a SigmaDelta message). The
simulator's synaptic-op count is left out: for "sdn" it counts nonzero levels, not messages.
The integer networks are the ones `verify` checks bit for bit in Lava's fixed_pt model; the
numbers here come from the reference simulator (Lava's CPU model runs ~0.1 s an image).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import provenance

from spikeport.convert import convert
from spikeport.data import load_data
from spikeport.eval import evaluate
from spikeport.quantize import get_profile, quantize
from spikeport.targets import discover

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results" / "lava_kinds.json"
TS = list(range(1, 13))
LAYERS = {"cnn": 4, "mlp": 3}  # conv, pool, conv, dense / dense, dense, dense


def run(model: str, max_t: int, pick: bool) -> dict[str, Any]:
    from spikeport.targets import lava

    snn = convert(EX / f"digits_{model}.onnx", EX / "digits_calib.npz", signed=False)
    profile = get_profile("lava") if pick else lava.LIF_PROFILE
    q = quantize(snn, np.load(EX / "digits_calib.npz")["x"], profile, max_t)
    test = load_data(EX / "digits_test.npz", snn.inputs, labels=True, n_classes=10)
    ts = [t for t in TS if t <= max_t]
    rep = evaluate(q, test, ts, "int", str(EX / f"digits_{model}.onnx"))
    meta = q.meta["quantization"]
    return {
        "model": f"digits_{model}",
        "kind": meta["neuron_kind"],
        "max_T": max_t,
        "vth_divisor": meta.get("sdn_vth_divisor"),
        "ann": rep["ann"]["accuracy"],
        "T": {
            r["T"]: {
                "accuracy": r["accuracy"],
                "events": r["spikes_per_inference"],
                "message_bits": r["spikes_per_inference"] * r.get("bits_per_event", 0.0),
            }
            for r in rep["records"]
        },
        "kind_choice": meta.get("kind_choice"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    show = [4, 7, 8, 12]
    head = "| model | kind | --max-T | ANN | " + " | ".join(f"T={t}" for t in show) + " |"
    lines = [head, "|---|---|---:|---:|" + "---:|" * len(show)]
    for r in rows:
        cells = []
        for t in show:
            rec = r["T"].get(t)
            cells.append(
                "-"
                if rec is None
                else f"{100 * rec['accuracy']:.2f} ({rec['events']:.0f} ev, "
                f"{rec['message_bits']:.0f} b)"
            )
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['max_T']} | {100 * r['ann']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "accuracy % (events per inference, message bits per inference), int mode"]
    return "\n".join(lines)


def main() -> None:
    discover()
    rows = [
        run(model, max_t, pick)
        for model in ("cnn", "mlp")
        for max_t in (8, 12)
        for pick in (False, True)
    ]
    doc = {
        "benchmark": "lava_kinds",
        "layers": LAYERS,
        "rows": rows,
        **provenance.record(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
