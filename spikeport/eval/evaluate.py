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
from scipy.special import softmax
from scipy.stats import binomtest

from spikeport.batch import Batch, onnx_feeds, size, take
from spikeport.data import Dataset
from spikeport.errors import BadInput, CheckFailed
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.graph import Graph
from spikeport.ir.ops import class_scores
from spikeport.sim import simulate
from spikeport.sim.simulator import mean_output

SCHEMA = "spikeport.eval"
METRICS = ("accuracy", "agreement_with_ann", "cosine_to_ann")  # what --require can gate on
SCHEMA_VERSION = 2  # 2: accuracy only for class scores with labels; fidelity fields


@dataclass(frozen=True)
class Requirement:
    """`--require T:ACC` (accuracy at T at least ACC, a fraction) or `--require
    T:METRIC=VALUE` with METRIC one of accuracy, agreement_with_ann, cosine_to_ann."""

    T: int
    accuracy: float  # the bar, whatever the metric
    metric: str = "accuracy"

    @classmethod
    def parse(cls, text: str) -> Requirement:
        try:
            t, bar = text.split(":")
            metric, _, value = bar.rpartition("=")
            req = cls(int(t), float(value), metric or "accuracy")
        except ValueError:
            raise BadInput(
                f"--require '{text}' is not T:ACC or T:METRIC=VALUE "
                "(e.g. 4:0.95, 8:cosine_to_ann=0.99)"
            ) from None
        if req.metric not in METRICS:
            raise BadInput(f"--require '{text}': metric '{req.metric}' is not one of {METRICS}")
        if req.T < 1 or not -1.0 <= req.accuracy <= 1.0:
            raise BadInput(f"--require '{text}': T must be >= 1 and the bar a fraction")
        return req


REFERENCE_BATCH = 256


def onnx_session(path: str | os.PathLike[str]) -> ort.InferenceSession:
    """An onnxruntime session of the source ONNX model (CPU), made once per model: a fine-tune
    that augments its data asks it for every batch."""
    from spikeport.convert.onnx_load import quiet_session_options

    return ort.InferenceSession(
        str(existing_file(path, "ONNX model")),
        quiet_session_options(),
        providers=["CPUExecutionProvider"],
    )


def session_outputs(sess: ort.InferenceSession, x: Batch) -> list[np.ndarray]:
    """Every output of `sess` on `x` (integer inputs such as token ids keep their type). A
    file whose batch axis is fixed at 1 runs sample by sample; others in batches."""
    step = 1 if all(i.shape and i.shape[0] == 1 for i in sess.get_inputs()) else REFERENCE_BATCH
    parts = [
        sess.run(None, onnx_feeds(sess.get_inputs(), take(x, slice(s, s + step))))
        for s in range(0, size(x), step)
    ]
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]


def onnx_outputs(path: str | os.PathLike[str], x: Batch) -> list[np.ndarray]:
    """The float reference: every output of the source ONNX model run by onnxruntime."""
    return session_outputs(onnx_session(path), x)


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


def check_source(graph: Graph, path: str | os.PathLike[str]) -> str:
    """`path` as a string, refused unless it is the file the graph was converted from (its
    sha256 is in the graph's provenance)."""
    path = str(path)
    what = "TFLite model" if path.lower().endswith(".tflite") else "ONNX model"
    want = graph.meta.get("source", {}).get("sha256")
    if want and sha256_file(existing_file(path, what)) != want:
        raise BadInput(f"{path}: not the model this graph was converted from (sha256 differs)")
    return path


def source_model(
    graph: Graph, path: str | os.PathLike[str], output: int = 0, tflite: bool | None = None
) -> Callable[[Batch], tuple[np.ndarray, str]]:
    """The file the graph was converted from (its sha256 checked once, here) as a function of
    a batch: its output `output` and what ran it, onnxruntime (one session for every batch)
    or, for a .tflite (`tflite`; by default the file's extension), LiteRT's kernels."""
    from spikeport.convert.litert import litert_reference, nth_output  # LiteRT on first use

    path = check_source(graph, path)
    is_tflite = path.lower().endswith(".tflite") if tflite is None else tflite
    if is_tflite:

        def run_litert(x: Batch) -> tuple[np.ndarray, str]:
            outs, kernels = litert_reference(path, x)
            return nth_output(outs, output, path), kernels

        return run_litert
    sess = onnx_session(path)

    def run_onnx(x: Batch) -> tuple[np.ndarray, str]:
        return nth_output(session_outputs(sess, x), output, path), "onnxruntime"

    return run_onnx


OWN_VIEW = "spikeport ann mode (ReLU view of this graph)"


def ann_reference(
    graph: Graph,
    data: Dataset,
    onnx_path: str | None,
    tflite_path: str | None = None,
    output: int = 0,
) -> tuple[np.ndarray, str]:
    """The ANN's output `output` (N, ...): onnxruntime (or LiteRT for a .tflite) on the source
    model if given, else the graph's ANN view. A final softmax that import dropped is applied
    to the ANN view too, so both references speak in the source model's terms."""
    if onnx_path is None and tflite_path is None:
        name = graph.outputs[output]
        values = simulate(graph, data.x, 1, "ann").outputs[name][0]
        return _as_source(graph, name, values), OWN_VIEW
    if onnx_path is not None and tflite_path is not None:
        raise BadInput("--onnx and --tflite both name a reference model; give one")
    path = str(onnx_path or tflite_path)
    return source_model(graph, path, output, tflite=tflite_path is not None)(data.x)


def reference_note(graph: Graph, ann_source: str) -> str | None:
    """Where the reference is the graph's own ANN view and its weights are no longer the
    source model's (T-aware conversion refitted some, convert/refit.py, or `finetune` trained
    them), a line saying so."""
    if ann_source != OWN_VIEW:
        return None
    refitted = graph.meta.get("conversion", {}).get("t_aware", {}).get("refitted", [])
    changed = [f"whose conversion refitted the weights of {len(refitted)} layers"] * bool(refitted)
    changed += ["whose weights finetune trained"] * ("finetune" in graph.meta)
    if not changed:
        return None
    return (
        f"the ANN reference is this graph's own ANN view, {' and '.join(changed)}, not the "
        "source model: --onnx or --tflite names it"
    )


def _as_source(graph: Graph, name: str, values: np.ndarray) -> np.ndarray:
    """Output values in the source model's terms: softmax put back where import dropped it."""
    if name in graph.meta.get("source", {}).get("dropped_softmax", []):
        return softmax(values, axis=-1)
    return values


def fidelity(snn: np.ndarray, ann: np.ndarray) -> tuple[float, float]:
    """Mean over samples of the cosine similarity and of the relative L2 error between the
    SNN's output (real units, mean over steps) and the ANN's: for outputs that are not class
    scores (embeddings, token-level outputs, detection heads), and for class scores too."""
    a = snn.reshape(len(snn), -1).astype(np.float64)
    b = ann.reshape(len(ann), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    rel = np.linalg.norm(a - b, axis=1) / np.maximum(nb, 1e-30)
    return float(cos.mean()), float(rel.mean())


def accuracy_interval(hits: int, n: int) -> list[float]:
    """The 95 % Wilson score interval of an accuracy of `hits` out of `n` (scipy's binomtest):
    how far the test set's size lets the figure move. A difference of one or two samples on a
    few hundred lies well inside it, so a `--require` bar set closer than this to the
    measured accuracy gates on the test set's noise (Brown, Cai and DasGupta 2001 recommend
    Wilson's over the normal interval, which collapses at 0 and 1)."""
    if n == 0:
        return [0.0, 1.0]
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def paired_with_ann(snn_hits: np.ndarray, ann_hits: np.ndarray) -> dict[str, float]:
    """The samples only the ANN classifies right (`ann_only`) and only the SNN does
    (`snn_only`), and the two-sided p-value of the exact McNemar test that both are equally
    likely (a binomial test of one count out of both): whether the test set tells the two
    networks apart at all. The two accuracies' intervals overlap far more often than that,
    because both networks see the same samples and get most of them equally right."""
    ann_only = int((ann_hits & ~snn_hits).sum())
    snn_only = int((snn_hits & ~ann_hits).sum())
    both = ann_only + snn_only
    p = binomtest(ann_only, both).pvalue if both else 1.0
    return {"ann_only": ann_only, "snn_only": snn_only, "p_value": float(p)}


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
    graph output scored (default: the first). Class scores (ir.ops.class_scores) get accuracy
    (with labels) and agreement with the ANN; every output gets its fidelity to the ANN."""
    if not timesteps or min(timesteps) < 1:
        raise BadInput(f"-T needs positive timesteps, got {timesteps}")
    k = output_index(graph, output)
    name = graph.outputs[k]
    classes = class_scores(graph, name)
    ann_out, ann_source = ann_reference(graph, data, onnx_path, tflite_path, k)
    res = simulate(graph, data.x, max(timesteps), mode, progress=progress)
    snn_out = mean_output(graph, res, mode, name)
    if snn_out.shape[1:] != ann_out.shape:
        raise BadInput(
            f"output '{name}': the reference gives shape {ann_out.shape[1:]} per sample, "
            f"the graph {snn_out.shape[2:]}"
        )
    labels = data.y if classes else None
    n = len(data)
    ann_pred = ann_out.argmax(-1) if classes else None  # the same at every T
    ann_hits = ann_pred == labels if labels is not None else None
    records = []
    for t in sorted(set(timesteps)):
        record: dict[str, object] = {"T": t}
        if classes:
            pred = snn_out[t - 1].argmax(-1)
            if labels is not None:
                right = pred == labels
                hits = int(right.sum())
                record["accuracy"] = hits / n
                record["accuracy_interval"] = accuracy_interval(hits, n)
                record["paired_with_ann"] = paired_with_ann(right, ann_hits)
            record["agreement_with_ann"] = float((pred == ann_pred).mean())
        cos, rel = fidelity(_as_source(graph, name, snn_out[t - 1]), ann_out)
        record["cosine_to_ann"], record["relative_error_to_ann"] = cos, rel
        record["spikes_per_inference"] = float(res.spikes[:t].sum() / n)
        record["spike_levels_per_inference"] = float(res.levels[:t].sum() / n)
        if res.spikes[:t].sum():  # the mean over events: none, no mean
            record["bits_per_event"] = float(res.event_bits[:t].sum() / res.spikes[:t].sum())
        record["synaptic_ops_per_inference"] = float(res.sops[:t].sum() / n)
        records.append(record)
    ann: dict[str, object] = {"source": ann_source}
    if note := reference_note(graph, ann_source):
        ann["note"] = note
    if ann_hits is not None:
        hits = int(ann_hits.sum())
        ann["accuracy"], ann["accuracy_interval"] = hits / n, accuracy_interval(hits, n)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": {"stage": graph.stage, "source": graph.meta.get("source", {})},
        "output": name,
        "data": data.provenance,
        "mode": mode,
        "ann": ann,
        "records": records,
    }


def check_requirements(
    report: dict[str, object], reqs: list[Requirement]
) -> list[dict[str, object]]:
    """Add a `requirements` entry to the report; return the ones missed."""
    by_t = {r["T"]: r for r in report["records"]}  # type: ignore[index]
    results = []
    for q in reqs:
        if q.metric not in by_t[q.T]:
            raise BadInput(
                f"--require {q.T}:{q.metric}=...: this output has no {q.metric} "
                f"(reported: {', '.join(k for k in by_t[q.T] if k in METRICS)})"
            )
        value = by_t[q.T][q.metric]
        results.append(
            {
                "T": q.T,
                "metric": q.metric,
                "min": q.accuracy,
                "value": value,
                "met": value >= q.accuracy,
            }
        )
    report["requirements"] = results
    return [r for r in results if not r["met"]]


def missed_message(missed: list[dict[str, object]]) -> CheckFailed:
    parts = [f"T={m['T']}: {m['metric']} {m['value']:.4f} < {m['min']:.4f}" for m in missed]
    return CheckFailed("bar missed: " + "; ".join(parts))
