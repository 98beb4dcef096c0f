"""A/B of quantize's uniform classifier inputs (spikeport/quantize/uniform_inputs.py) on the
held-out CNN family: each net converted once per T (T-aware, defaults), quantized for `sim`
with and without the multipliers in front of its classifier, both scored in integer mode on
the task's test split.

    .venv/bin/python benchmarks/uniform_inputs_ab.py [--task digits|shapes] [--nets relu_dw:7,...]
        [--jobs 2]
    # writes benchmarks/results/uniform_inputs_ab_TASK.json and prints a summary

Where quantize puts no multipliers (the classifier reads spikes, its input scales lie within
SPREAD, or the proof has no room) both quantizations are the same graph and the row says so.
The nets are trained as benchmarks/cnn_family.py trains them. No download. 1 torch thread.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))
import cnn_family  # noqa: E402
import parallel  # noqa: E402
import provenance  # noqa: E402

from spikeport.convert import convert  # noqa: E402
from spikeport.data import Dataset, load_data  # noqa: E402
from spikeport.eval import evaluate  # noqa: E402
from spikeport.ir.graph import Graph  # noqa: E402
from spikeport.quantize import get_profile  # noqa: E402
from spikeport.quantize.quantize import quantize_kind  # noqa: E402
from spikeport.threads import set_threads  # noqa: E402


def _accuracy(graph: Graph, test: Dataset, T: int, path: Path) -> float:
    return evaluate(graph, test, [T], "int", str(path))["records"][0]["accuracy"]


def ab_rows(spec: tuple[str, str, str], task: str) -> list[dict[str, object]]:
    """One net's rows (`spec`: arch, ":", seed): per T, both accuracies and the layers quantize
    put multipliers in front of; on one torch thread."""
    set_threads(1)
    torch.set_num_threads(1)
    arch, _, seed = spec
    splits = cnn_family.TASKS[task].splits()
    test, x_calib = load_data(splits["test"], labels=True), load_data(splits["calib"]).x
    rows = []
    with tempfile.TemporaryDirectory() as work:
        _, path = cnn_family.make(arch, int(seed), Path(work), task=task)
        for T in cnn_family.TS:
            snn = convert(path, splits["calib"], timesteps=T)
            with_them = quantize_kind(snn, x_calib, get_profile("sim"))
            layers = with_them.meta["quantization"].get("uniform_inputs", [])
            on = _accuracy(with_them, test, T, path)
            off = on
            if layers:  # else both are the same graph
                plain = quantize_kind(snn, x_calib, get_profile("sim"), uniform_inputs=False)
                off = _accuracy(plain, test, T, path)
            print(f"{arch}:{seed} T={T}: {100 * on:.2f} / {100 * off:.2f}", flush=True)
            rows.append({"net": f"{arch}:{seed}", "T": T, "uniform": on, "plain": off,
                         "layers": layers})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=sorted(cnn_family.TASKS), default="digits")
    ap.add_argument("--nets", default=cnn_family.DEFAULT_NETS, help="arch:seed,...")
    ap.add_argument("--out", help="results/uniform_inputs_ab_TASK.json")
    parallel.add_jobs(ap)
    args = ap.parse_args()
    specs = cnn_family.net_specs(ap, args.nets, args.task)
    out = Path(args.out or HERE / "results" / f"uniform_inputs_ab_{args.task}.json")
    doc = {"benchmark": "uniform_inputs_ab", "command": " ".join(sys.argv),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), **provenance.record()}  # fmt: skip
    cnn_family.TASKS[args.task].splits()  # drawn once here, not by each job

    def write(nets: list[list[dict[str, object]]]) -> None:  # after each net
        out.write_text(json.dumps({**doc, "rows": [r for net in nets for r in net]}, indent=1))

    job = functools.partial(ab_rows, task=args.task)
    rows = [r for net in parallel.map_on_cores(job, specs, args.jobs, write) for r in net]
    for T in cnn_family.TS:
        diffs = [100 * (r["uniform"] - r["plain"]) for r in rows if r["T"] == T]
        changed = sum(1 for r in rows if r["T"] == T and r["layers"])
        spread = f"{min(diffs):+.2f} to {max(diffs):+.2f}"
        print(f"T={T}: {changed} of {len(diffs)} conversions get multipliers; accuracy change "
              f"mean {sum(diffs) / len(diffs):+.2f}, {spread}")  # fmt: skip


if __name__ == "__main__":
    main()
