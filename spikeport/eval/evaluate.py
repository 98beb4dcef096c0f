"""Accuracy versus timesteps, against the ANN: the report users gate their CI on.

One simulator run to max(T) gives every T at once: the network is causal, so the output
accumulated after t steps is exactly what a run of t steps would give.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from spikeport.batch import Batch, onnx_feeds, size, take
from spikeport.data import Dataset
from spikeport.errors import BadInput, CheckFailed
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.graph import Graph
from spikeport.sim import simulate

SCHEMA = "spikeport.eval"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Requirement:
    """`--require T:ACC`: accuracy at T must be at least ACC (a fraction)."""

    T: int
    accuracy: float

    @classmethod
    def parse(cls, text: str) -> Requirement:
        try:
            t, acc = text.split(":")
            req = cls(int(t), float(acc))
        except ValueError:
            raise BadInput(f"--require '{text}' is not T:ACC (e.g. 4:0.95)") from None
        if req.T < 1 or not 0.0 <= req.accuracy <= 1.0:
            raise BadInput(f"--require '{text}': T must be >= 1 and ACC a fraction in [0, 1]")
        return req


REFERENCE_BATCH = 256


def onnx_outputs(path: str | os.PathLike[str], x: Batch) -> list[np.ndarray]:
    """The float reference: every output of the source ONNX model run by onnxruntime (integer
    inputs such as token ids keep their type). A file whose batch axis is fixed at 1 runs
    sample by sample; others in batches."""
    from spikeport.convert.onnx_load import quiet_session_options

    sess = ort.InferenceSession(
        str(existing_file(path, "ONNX model")),
        quiet_session_options(),
        providers=["CPUExecutionProvider"],
    )
    names = [i.name for i in sess.get_inputs()]
    step = 1 if all(i.shape and i.shape[0] == 1 for i in sess.get_inputs()) else REFERENCE_BATCH
    parts = [
        sess.run(None, onnx_feeds(names, take(x, slice(s, s + step))))
        for s in range(0, size(x), step)
    ]
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]


def onnx_logits(path: str | os.PathLike[str], x: Batch, output: int = 0) -> np.ndarray:
    """Output `output` (by position) of the source ONNX model on `x` (see onnx_outputs)."""
    return onnx_outputs(path, x)[output]


def output_index(graph: Graph, name: str | None) -> int:
    """The position of the output that eval scores: `name` (an output of the graph or of the
    source model), or the first one."""
    if name is None:
        return 0
    source = graph.meta.get("source", {}).get("outputs", [])
    for names in (graph.outputs, source):
        if name in names:
            return list(names).index(name)
    raise BadInput(f"--output '{name}': the model's outputs are {list(source or graph.outputs)}")


def ann_reference(
    graph: Graph,
    data: Dataset,
    onnx_path: str | None,
    tflite_path: str | None = None,
    output: int = 0,
) -> tuple[np.ndarray, str]:
    """ANN predictions: onnxruntime (or LiteRT for a .tflite) on the source model if given,
    else the graph's ANN view."""
    if onnx_path is None and tflite_path is None:
        logits = simulate(graph, data.x, 1, "ann").outputs[graph.outputs[output]][0]
        return logits.argmax(-1), "spikeport ann mode (ReLU view of this graph)"
    if onnx_path is not None and tflite_path is not None:
        raise BadInput("--onnx and --tflite both name a reference model; give one")
    path, what = (onnx_path, "ONNX model") if onnx_path else (tflite_path, "TFLite model")
    want = graph.meta.get("source", {}).get("sha256")
    if want and sha256_file(existing_file(path, what)) != want:
        raise BadInput(f"{path}: not the model this graph was converted from (sha256 differs)")
    if tflite_path is not None:
        from spikeport.convert.litert import litert_logits  # needs ai-edge-litert

        return litert_logits(tflite_path, data.x).argmax(-1), "LiteRT (ai-edge-litert)"
    return onnx_logits(path, data.x, output).argmax(-1), "onnxruntime"


def evaluate(
    graph: Graph,
    data: Dataset,
    timesteps: list[int],
    mode: str = "int",
    onnx_path: str | None = None,
    progress: Callable[[int], None] | None = None,
    tflite_path: str | None = None,
    output: str | None = None,
) -> dict[str, object]:
    """The eval report (schema in docs/eval-json.md): one record per T. `output` names the
    graph output scored (default: the first)."""
    if data.y is None:
        raise BadInput(f"{data.path}: key 'y' (labels) is missing; eval needs labels")
    if not timesteps or min(timesteps) < 1:
        raise BadInput(f"-T needs positive timesteps, got {timesteps}")
    k = output_index(graph, output)
    ann_pred, ann_source = ann_reference(graph, data, onnx_path, tflite_path, k)
    res = simulate(graph, data.x, max(timesteps), mode, progress=progress)
    out = res.outputs[graph.outputs[k]]
    n = len(data)
    records = []
    for t in sorted(set(timesteps)):
        pred = out[t - 1].argmax(-1)
        records.append(
            {
                "T": t,
                "accuracy": float((pred == data.y).mean()),
                "agreement_with_ann": float((pred == ann_pred).mean()),
                "spikes_per_inference": float(res.spikes[:t].sum() / n),
                "synaptic_ops_per_inference": float(res.sops[:t].sum() / n),
            }
        )
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": {"stage": graph.stage, "source": graph.meta.get("source", {})},
        "output": graph.outputs[k],
        "data": data.provenance,
        "mode": mode,
        "ann": {"accuracy": float((ann_pred == data.y).mean()), "source": ann_source},
        "records": records,
    }


def check_requirements(
    report: dict[str, object], reqs: list[Requirement]
) -> list[dict[str, object]]:
    """Add a `requirements` entry to the report; return the ones missed."""
    by_t = {r["T"]: r["accuracy"] for r in report["records"]}  # type: ignore[index]
    results = [
        {
            "T": q.T,
            "min_accuracy": q.accuracy,
            "accuracy": by_t[q.T],
            "met": by_t[q.T] >= q.accuracy,
        }
        for q in reqs
    ]
    report["requirements"] = results
    return [r for r in results if not r["met"]]


def missed_message(missed: list[dict[str, object]]) -> CheckFailed:
    parts = [f"T={m['T']}: {m['accuracy']:.4f} < {m['min_accuracy']:.4f}" for m in missed]
    return CheckFailed("accuracy bar missed: " + "; ".join(parts))
