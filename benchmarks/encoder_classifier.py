"""A classifier on a real sentence encoder's embeddings, ANN against SNN (issue #17).

all-MiniLM-L6-v2 from `make zoo`; the task is benchmarks/zoo/topics.py's (eight topics of the
Python documentation, each split in half: 152 training and 155 test sentences). A logistic
regression (scikit-learn, defaults) is fitted once, on the ANN's embeddings (onnxruntime) of
the training half. It then classifies the test half twice: from the ANN's embeddings, and from
the SNN's (spikeport convert -T T [--spike-bits b], quantize --target sim, integer mode; the
embedding is the output averaged over the T steps). The acceptance bar: the SNN's accuracy
within 1 point of the ANN's, conversion only. Also reported: the mean cosine of the SNN's test
embeddings to the ANN's.

    .venv/bin/python benchmarks/encoder_classifier.py -T 8 --spike-bits 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy and torch share 2 cores: no oversubscription

import numpy as np  # noqa: E402
import parallel  # noqa: E402
import provenance  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = HERE / "zoo" / "work" / "models"
NAME = "all_minilm_l6_v2"
RESULTS = HERE / "results"
BAR_POINTS = 1.0


def _ann_embeddings(onnx_path: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: x[k] for k in names})[0].astype(np.float64)


def run(timesteps: int, spike_bits: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    from spikeport.convert import convert
    from spikeport.data import load_data
    from spikeport.quantize import get_profile, quantize
    from spikeport.sim import simulate
    from spikeport.sim.simulator import mean_output

    onnx_path, calib = MODELS / f"{NAME}.onnx", MODELS / f"{NAME}_calib.npz"
    topics = MODELS / f"{NAME}_topics.npz"
    missing = [p.name for p in (onnx_path, calib, topics) if not p.exists()]
    if missing:
        why = f"zoo files missing ({', '.join(missing)}): `make zoo`, then benchmarks/zoo/topics.py"
        print(f"[encoder_classifier] skipped: {why}")
        return {"skipped": why}
    task = np.load(topics)
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    x = {k: task[k] for k in inputs}
    y, train = task["y"], task["train"].astype(bool)
    ann = _ann_embeddings(onnx_path, x)
    clf = LogisticRegression(max_iter=2000).fit(ann[train], y[train])
    test_x = {k: v[~train] for k, v in x.items()}
    t0 = time.perf_counter()
    snn = convert(onnx_path, calib, timesteps=timesteps, spike_bits=spike_bits)
    q = quantize(snn, load_data(calib, snn.inputs).x, get_profile("sim"))
    res = simulate(q, test_x, timesteps, "int")
    emb = mean_output(q, res, "int")[-1]
    seconds = time.perf_counter() - t0
    ann_test = ann[~train]
    cosine = np.sum(emb * ann_test, -1) / (
        np.linalg.norm(emb, axis=-1) * np.linalg.norm(ann_test, axis=-1) + 1e-12
    )
    acc_ann = float((clf.predict(ann_test) == y[~train]).mean())
    acc_snn = float((clf.predict(emb) == y[~train]).mean())
    return {
        "model": NAME,
        "task": f"{len(task['topics'])} pydoc topics: {', '.join(map(str, task['topics']))}",
        "train_sentences": int(train.sum()),
        "test_sentences": int((~train).sum()),
        "classifier": "sklearn LogisticRegression(max_iter=2000) on the ANN's training embeddings",
        "T": timesteps,
        "spike_bits": spike_bits,
        "accuracy_ann": acc_ann,
        "accuracy_snn": acc_snn,
        "mean_cosine_to_ann": float(cosine.mean()),
        "bar": {"points": BAR_POINTS, "met": 100 * (acc_ann - acc_snn) <= BAR_POINTS},
        "seconds_convert_quantize_simulate": seconds,
        **provenance.record(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-T", type=int, default=8)
    ap.add_argument("--spike-bits", type=int, default=4)
    ap.add_argument("-o", type=Path, default=None)
    a = ap.parse_args()
    default = RESULTS / f"encoder_classifier_T{a.T}_b{a.spike_bits}.json"
    path = parallel.out_path(ap, a.o, default, "-o")
    out = run(a.T, a.spike_bits)
    if "skipped" not in out:
        path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
