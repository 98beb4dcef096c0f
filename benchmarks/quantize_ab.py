"""A/B of a quantize choice on the held-out CNN family: each net converted once per T (T-aware,
defaults), quantized for `sim` both ways, both scored in integer mode on the task's test split.

    .venv/bin/python benchmarks/quantize_ab.py [--compare uniform_inputs|weight_rounding]
        [--task digits|shapes] [--nets relu_dw:7,...] [--jobs 2]
    # writes benchmarks/results/COMPARE_ab_TASK.json and prints a summary

The comparisons (COMPARISONS), each "on" against "off":
- uniform_inputs (spikeport/quantize/uniform_inputs.py): the multipliers in front of the
  classifier, against none. Where quantize puts none (the classifier reads spikes, its input
  scales lie within SPREAD, or the proof has no room) both are the same graph and the row
  says so.
- weight_rounding (spikeport/quantize/rounding.py): `--weight-rounding feedback` against
  `nearest`, the default.
The nets are trained as benchmarks/cnn_family.py trains them. No download. 1 torch thread.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))
import cnn_family  # noqa: E402
import parallel  # noqa: E402
import provenance  # noqa: E402

from spikeport.batch import Batch  # noqa: E402
from spikeport.convert import convert  # noqa: E402
from spikeport.data import Dataset, load_data  # noqa: E402
from spikeport.eval import evaluate  # noqa: E402
from spikeport.ir.graph import Graph  # noqa: E402
from spikeport.quantize import get_profile  # noqa: E402
from spikeport.quantize.quantize import quantize_kind  # noqa: E402
from spikeport.threads import set_threads  # noqa: E402

Quantizer = Callable[[Graph, Batch], Graph]
# name -> (on, off, what "on" changed in the graph: a list, empty where both are the same graph)
COMPARISONS: dict[str, tuple[Quantizer, Quantizer, Callable[[Graph], list]]] = {
    "uniform_inputs": (
        lambda snn, x: quantize_kind(snn, x, get_profile("sim")),
        lambda snn, x: quantize_kind(snn, x, get_profile("sim"), uniform_inputs=False),
        lambda q: q.meta["quantization"].get("uniform_inputs", []),
    ),
    "weight_rounding": (
        lambda snn, x: quantize_kind(snn, x, get_profile("sim"), weight_rounding="feedback"),
        lambda snn, x: quantize_kind(snn, x, get_profile("sim")),
        lambda q: [n.name for n in q.nodes if n.op in ("dense", "conv2d")],
    ),
}


def _accuracy(graph: Graph, test: Dataset, T: int, path: Path) -> float:
    return evaluate(graph, test, [T], "int", str(path))["records"][0]["accuracy"]


def ab_rows(spec: tuple[str, str, str], task: str, compare: str) -> list[dict[str, object]]:
    """One net's rows (`spec`: arch, ":", seed): per T, both accuracies and what "on" changed;
    on one torch thread."""
    set_threads(1)
    torch.set_num_threads(1)
    on_q, off_q, changed = COMPARISONS[compare]
    arch, _, seed = spec
    splits = cnn_family.TASKS[task].splits()
    test, x_calib = load_data(splits["test"], labels=True), load_data(splits["calib"]).x
    rows = []
    with tempfile.TemporaryDirectory() as work:
        _, path = cnn_family.make(arch, int(seed), Path(work), task=task)
        for T in cnn_family.TS:
            snn = convert(path, splits["calib"], timesteps=T)
            with_it = on_q(snn, x_calib)
            layers = changed(with_it)
            on = _accuracy(with_it, test, T, path)
            off = _accuracy(off_q(snn, x_calib), test, T, path) if layers else on
            print(f"{arch}:{seed} T={T}: {100 * on:.2f} / {100 * off:.2f}", flush=True)
            rows.append({"net": f"{arch}:{seed}", "T": T, "on": on, "off": off,
                         "layers": layers})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="uniform_inputs")
    ap.add_argument("--task", choices=sorted(cnn_family.TASKS), default="digits")
    ap.add_argument("--nets", default=cnn_family.DEFAULT_NETS, help="arch:seed,...")
    ap.add_argument("--out", help="results/COMPARE_ab_TASK.json")
    parallel.add_jobs(ap)
    args = ap.parse_args()
    specs = cnn_family.net_specs(ap, args.nets, args.task)
    name = f"{args.compare}_ab"
    out = parallel.out_path(ap, args.out, HERE / "results" / f"{name}_{args.task}.json")
    doc = {"benchmark": name, "command": " ".join(sys.argv),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), **provenance.record()}  # fmt: skip
    cnn_family.TASKS[args.task].splits()  # drawn once here, not by each job

    def write(nets: list[list[dict[str, object]]]) -> None:  # after each net
        out.write_text(json.dumps({**doc, "rows": [r for net in nets for r in net]}, indent=1))

    job = functools.partial(ab_rows, task=args.task, compare=args.compare)
    rows = [r for net in parallel.map_on_cores(job, specs, args.jobs, write) for r in net]
    for T in cnn_family.TS:
        diffs = [100 * (r["on"] - r["off"]) for r in rows if r["T"] == T]
        up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        print(f"T={T}: {args.compare} on minus off, mean {sum(diffs) / len(diffs):+.2f} points, "
              f"{min(diffs):+.2f} to {max(diffs):+.2f}, {up} up, {down} down")  # fmt: skip


if __name__ == "__main__":
    main()
