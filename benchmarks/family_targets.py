"""Every target on the held-out CNN family: what runs where, bit for bit, and what is refused.

    .venv/bin/python benchmarks/family_targets.py [--nets relu_dw:7,...] [--jobs 2]
    # writes benchmarks/results/family_targets.json and prints a markdown table

For each net of benchmarks/cnn_family.py (trained there, the same seeds): `convert -T 8`, then
for each target `quantize --target X` (SpiNNaker2 `--max-T 15`, where its max pooling is
exact), `emit`, and `verify -T 8` on the first VERIFY_INPUTS test images; and the quantized
graph's integer accuracy at T = 8 on the whole test split (the reference simulator, which
verify has just shown the target equals). A refusal is recorded with its stage and its one
line. Lava's verify needs .venv-lava (`make lava-venv`, which `make test` runs).

    .venv/bin/python benchmarks/family_targets.py --transformers [--nets task:arch:seed,...]
    # writes benchmarks/results/family_targets_transformers.json

does the same for nets of benchmarks/transformer_family.py (its tasks, architectures and
exporters; scored on their own test sentences, or digits for the ViT): which of them each
target runs bit for bit, and what it refuses.
No download. 1 torch thread a process.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cnn_family  # noqa: E402
import parallel  # noqa: E402
import provenance  # noqa: E402
import transformer_family  # noqa: E402

from spikeport.batch import Batch, take  # noqa: E402
from spikeport.convert import convert  # noqa: E402
from spikeport.data import Dataset, load_data  # noqa: E402
from spikeport.errors import SpikeportError  # noqa: E402
from spikeport.eval import evaluate  # noqa: E402
from spikeport.quantize import quantize  # noqa: E402
from spikeport.targets import emit, get_target, verify  # noqa: E402

T = 8
TARGETS = {"c": None, "spinnaker2": 15, "nir": None, "lava": None}  # target: --max-T
VERIFY_INPUTS = 20
DEFAULT_NETS = (
    "maxpool:7,relu6:7,relu_dw:7,leaky:7,hswish_se:7,silu_se:7,resnet:2,cnn_bn:2,"
    "convnext:7,densenet:7,inception:7,gelu:7"
)
# one net of each architecture and exporter of the transformer family
DEFAULT_TRANSFORMERS = (
    "count:pre_relu:2,majority:post_gelu:3,order:hf_bert:4,sentiment:hf_bert:5:dynamo,"
    "digits:vit:7,noisy_sum:hf_bert:17"
)


def target_cell(
    snn: Any, target: str, onnx_path: Path, out: Path, calib: Batch, test: Dataset
) -> dict[str, Any]:
    """quantize (on `calib`), emit and verify `snn` for `target`: the accuracy at T on `test`,
    or the refusal."""
    stage = "quantize"
    try:
        graph = quantize(snn, calib, get_target(target).profile, TARGETS[target])
        stage = "emit"
        emit(graph, target, out / target)
        stage = "verify"
        verify(graph, out / target, take(test.x, slice(0, VERIFY_INPUTS)), T)
    except SpikeportError as e:
        return {"stage": stage, "refused": str(e)}
    acc = evaluate(graph, test, [T], "int", str(onnx_path))["records"][0]["accuracy"]
    return {
        "stage": "verified",
        "accuracy": acc,
        "kind": graph.meta["quantization"].get("neuron_kind"),
    }


def run_one(spec: tuple[str, str, str], dynamo: bool = False) -> dict[str, Any]:
    """Train one family net (exported by the dynamo exporter with `dynamo`), convert it for
    T and try every target."""
    arch, _, seed = spec
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, path = cnn_family.make(arch, int(seed), Path(tmp), dynamo)
        calib = load_data(cnn_family.SPLITS["calib"]).x
        test = load_data(cnn_family.SPLITS["test"], labels=True)
        ann = cnn_family.accuracy(model, test.x, test.y)
        # unsigned: one conversion for every target, and Lava, SpiNNaker2 and NIR have no
        # signed spikes (the default may keep the search's signed candidate)
        snn = convert(path, cnn_family.SPLITS["calib"], timesteps=T, quiet=True, signed=False)
        row = _every_target(f"{arch}:{seed}", dynamo, ann, snn, path, Path(tmp), calib, test)
    return _done(row, t0)


def run_transformer(spec: tuple[str, str, int, bool]) -> dict[str, Any]:
    """Train one transformer-family net, convert it for T and try every target."""
    task, arch, seed, dynamo = spec
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files = transformer_family.make(task, arch, seed, dynamo, Path(tmp))
        snn = convert(files["onnx"], files["calib"], timesteps=T, quiet=True, signed=False)
        calib = load_data(files["calib"], snn.inputs).x
        test = load_data(files["test"], snn.inputs, labels=True)
        net = f"{task}:{arch}:{seed}"
        row = _every_target(net, dynamo, files["ann"], snn, files["onnx"], Path(tmp), calib, test)
    return _done(row, t0)


def _every_target(
    net: str, dynamo: bool, ann: float, snn: Any, onnx_path: Path, out: Path, calib: Batch,
    test: Dataset,
) -> dict[str, Any]:  # fmt: skip
    """A net's row: its name (":dynamo" when that exporter wrote it), ANN accuracy and
    target_cell for every target."""
    cells = {t: target_cell(snn, t, onnx_path, out, calib, test) for t in TARGETS}
    return {"net": net + (":dynamo" if dynamo else ""), "ann": ann, "targets": cells}


def _done(row: dict[str, Any], t0: float) -> dict[str, Any]:
    """`row` with the seconds since `t0`, printed as one line."""
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(_line(row), flush=True)
    return row


def _cell(c: dict[str, Any]) -> str:
    if "accuracy" in c:
        kind = f" ({c['kind']})" if c.get("kind") not in (None, "subtract") else ""
        return f"{100 * c['accuracy']:.2f}{kind}"
    why = c["refused"].split(": ", 1)[-1] if c["refused"].startswith("node '") else c["refused"]
    return f"refused at {c['stage']}: {why[:70]}" + ("..." if len(why) > 70 else "")


def _line(row: dict[str, Any]) -> str:
    cells = "; ".join(f"{t} {_cell(c)}" for t, c in row["targets"].items())
    return f"{row['net']}: ANN {100 * row['ann']:.2f}; {cells} ({row['seconds']} s)"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each net's integer accuracy at T on each target (verified bit for bit on
    VERIFY_INPUTS test images first), or why the target refused it."""
    lines = [f"| net | ANN | {' | '.join(TARGETS)} |", "|---|---:|" + "---|" * len(TARGETS)]
    for r in rows:
        cells = " | ".join(_cell(r["targets"][t]) for t in TARGETS)
        lines.append(f"| {r['net']} | {100 * r['ann']:.2f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--transformers",
        action="store_true",
        help="the transformer family's nets (task:arch:seed[:dynamo]) instead of the CNNs",
    )
    ap.add_argument(
        "--dynamo",
        action="store_true",
        help="CNNs: export with the dynamo exporter (opset 18) instead of TorchScript",
    )
    ap.add_argument("--nets", help=f"arch:seed,... ({DEFAULT_NETS}; with --transformers "
                    f"{DEFAULT_TRANSFORMERS})")  # fmt: skip
    parallel.add_jobs(ap)
    ap.add_argument("--out", help="(default: results/family_targets[_transformers|_dynamo].json)")
    args = ap.parse_args()
    if args.transformers and args.dynamo:
        ap.error("--dynamo is for the CNNs: a transformer net names its exporter (:dynamo)")
    if args.transformers:
        nets, run, name = args.nets or DEFAULT_TRANSFORMERS, run_transformer, "_transformers"
        specs: list[Any] = [transformer_family.net_spec(ap, s) for s in nets.split(",")]
    else:
        nets, name = args.nets or DEFAULT_NETS, "_dynamo" if args.dynamo else ""
        run = functools.partial(run_one, dynamo=args.dynamo)
        specs = cnn_family.net_specs(ap, nets)
    out = parallel.out_path(ap, args.out, HERE / "results" / f"family_targets{name}.json")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = parallel.map_on_cores(run, specs, args.jobs)
    doc = {"benchmark": "family_targets", "command": " ".join(sys.argv), "started": started,
           "T": T, "verify_inputs": VERIFY_INPUTS, **provenance.record(), "rows": rows}  # fmt: skip
    out.write_text(json.dumps(doc, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
