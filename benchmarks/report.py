"""benchmarks/results/*.json -> benchmarks/RESULTS.md and benchmarks/accuracy_vs_T.png.

Run by benchmarks/run.py after its sections; `.venv/bin/python benchmarks/report.py` rewrites
the two files from the JSON alone. Every table states the command and the run it came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLOT = "accuracy_vs_T.png"

LABELS = {
    "spikeport": "spikeport, T-aware conversion (-T T)",
    "spikeport_percentile": "spikeport, percentile conversion (--no-t-aware)",
    "spikeport_b2": "spikeport, T-aware, graded 2-bit spikes",
    "spikeport_b4": "spikeport, T-aware, graded 4-bit spikes",
    "spikeport_finetuned": "spikeport, fine-tuned (T=4)",
    "sj_max": "SpikingJelly max",
    "sj_robust": "SpikingJelly 99.9%",
    "sj_half_max": "SpikingJelly 1/2 max",
    "sj_channel_half": "SpikingJelly channel-wise 99.9%, half threshold",
    "sj_ltb": "SpikingJelly local threshold balancing",
    "sj_sta_encoder": "SpikingJelly STA spiking encoder (converted per T)",
}


def provenance(doc: dict[str, Any]) -> str:
    name = doc["benchmark"]
    env = "".join(f"{k}={v} " for k, v in (doc.get("environment") or {}).items())
    if doc["command"] == "make bench":
        how = f"`{env}make bench`, section `{name}` of `benchmarks/run.py`"
    else:
        how = f"`{env}.venv/bin/python {doc['command']}`"
    sp = doc.get("spikeport") or {}
    if sp.get("commit"):
        how += f" at spikeport commit {sp['commit'][:10]}" + (
            " (spikeport/ modified)" if sp.get("spikeport_modified") else ""
        )
    data = doc.get("data_file", f"{name}.json")  # a re-measured run's own file (with_remeasured)
    return (
        f"*Command: {how}; run started {doc['started']}, {doc['seconds']:.0f} s "
        f"({threads(doc)}{cpu(doc)}), load average "
        f"{doc['load_average_at_start']:.1f} at its start; data: "
        f"[results/{data}](results/{data}).*"
    )


def cpu(doc: dict[str, Any]) -> str:
    """The CPU the run was on, as ", on MODEL (flags)", and how the simulator ran its neuron
    loops (spikeport.sim.native); empty for runs before 2026-12-02, which did not record them
    (ratios to the peer differ between CPUs)."""
    model, loops = doc["machine"].get("cpu"), doc["machine"].get("simulator_loops")
    return (f", on {model}" if model else "") + (f", simulator loops: {loops}" if loops else "")


def threads(doc: dict[str, Any]) -> str:
    n = doc["machine"]["torch_threads"]
    return f"{n} torch thread{'' if n == 1 else 's'}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def count(v: float | None) -> str:
    """Events and operations per inference, three significant digits (1.23k, 45.6M)."""
    if v is None:
        return "-"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _remeasured_note(doc: dict[str, Any]) -> list[str]:
    """One line per later partial run, naming the models whose rows it gave (a model a still
    later run re-measured is that run's)."""
    runs = doc.get("remeasured") or []
    lines = []
    for k, later in enumerate(runs):
        # a model a later run re-measured whole (not only some kinds of rows) is that run's
        names = [
            m
            for m in later["models"]
            if not any(m in r["models"] and "row_kinds" not in r for r in runs[k + 1 :])
        ]
        which = "every table of this section"
        if "row_kinds" in later:
            which = "its rows of kinds " + ", ".join(later["row_kinds"])
        if names:
            lines += [
                f"*Rows of {', '.join(names)} ({which}) re-measured by a "
                f"later run: {provenance(later)[1:-1]}*",
                "",
            ]
    if lines:
        lines += [
            "*The other rows are from the run above; each model's times, from the run that "
            "measured it.*",
            "",
        ]
    return lines


def accuracy_md(doc: dict[str, Any]) -> list[str]:
    ts = doc["timesteps"]
    sj = doc["spikingjelly"]
    models = doc["models"]
    opts = doc.get("convert_options") or {}
    given = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "none: the defaults"
    lines = [
        "## 1. Accuracy vs T",
        "",
        provenance(doc),
        "",
        *_remeasured_note(doc),
        "Every network is converted from its ONNX file, calibrated on its calibration split "
        "and nothing else, and scored on a held-out test split that no training or "
        "calibration saw; fine-tuning trains on the training split and keeps the epoch with "
        "the best accuracy on the calibration split. ANN: onnxruntime on the source ONNX file.",
        "",
        "| model | made by | ONNX | calibration / training / test | test samples |",
        "|---|---|---|---|---:|",
    ]
    for name, m in models.items():
        src = m.get("source", f"examples/{name}.onnx")
        made = "benchmarks/nets.py" if src.startswith("benchmarks/") else "examples/"
        sp = m.get("splits", {})
        splits = " / ".join(f"`{sp[k]}`" for k in ("calib", "train", "test") if k in sp)
        lines.append(f"| {name} | {made} | `{src}` | {splits} | {m.get('test_samples', '-')} |")
    lines += [
        "",
        "The `bench_*` networks are not made by the example scripts: `benchmarks/nets.py` "
        "trains them (another seed, BatchNorm, a stride-2 convolution, residual blocks, a "
        "pre-norm encoder with a ReLU feed-forward on an exact-counting task of 5 classes) and "
        "exports them with torch's TorchScript exporter at opset 17, as a proxy for networks "
        "a user brings; the examples come from the dynamo exporter at opset 20.",
        "",
        f"- **spikeport, T-aware conversion**: `convert -T T` (options: {given}) -> "
        "`quantize --target sim` -> `eval -T T`, integer mode: one conversion per T, each "
        "scored at its own T (the T-aware search chooses thresholds for that T), 1-bit spikes.",
        "- **spikeport, percentile conversion**: `convert --no-t-aware` (per-channel 99.99th "
        "percentile thresholds, the converter's previous default): one graph scored at every T.",
        "- **spikeport, graded b-bit spikes**: `convert -T T --spike-bits b` (T-aware): each "
        "neuron sends a count 0..2^b - 1 per step (bipolar ones -(2^b - 1)..2^b - 1); one "
        "conversion per T.",
        "- **spikeport, fine-tuned**: `finetune -T 4` from the T-aware conversion for T = 4 "
        "(seed 0, `--val` the calibration "
        "split; the epochs of each model are given with its fine-tuning time below) -> "
        "`quantize --target sim` -> `eval`, integer mode.",
    ]
    if sj:
        lines += [
            f"- **SpikingJelly {sj}** `ann2snn.Converter` (float32 torch simulation, direct "
            "input at every step, output summed over steps, as its own `val()`), recipes:",
        ]
        seen: dict[str, str] = {}
        for m in models.values():
            for r in m["rows"]:
                if r["method"].startswith("sj_"):
                    seen.setdefault(r["method"], r["what"])
        for k, w in seen.items():
            call, _, what = w.partition("): ")
            lines.append(f"  - {LABELS[k]}: `{call})`: {what}")
        diffs = [
            f"{name} {m['sj_ann_max_abs_logit_diff_vs_onnxruntime']:.1e}"
            for name, m in models.items()
            if "sj_ann_max_abs_logit_diff_vs_onnxruntime" in m
        ]
        lines += [
            "",
            "SpikingJelly needs a torch module: the digits CNN and MLP are rebuilt with the "
            "architecture of `examples/make_digits.py`, the `bench_*` CNNs with the module "
            "classes of `benchmarks/nets.py` (BatchNorm folded into the convolutions, as the "
            "ONNX export has it), the ViT with `TinyViT` of `examples/make_transformers.py` "
            "(its encoder layers unrolled into the same LayerNorm, attention, Linear and GELU "
            "calls, because SpikingJelly's transformer recipes refuse `nn.TransformerEncoder` "
            "as an opaque module); all are loaded with the ONNX file's own initializers, not "
            "retrained. Max |logit difference| to onnxruntime on the test split: "
            + ", ".join(diffs)
            + ". The rate-coding recipes see the calibration split as one batch (their "
            "statistic is then exactly that of the split); local threshold balancing sees it "
            "in batches of 100, one pass, like SpikingJelly's cnn_mnist example. No "
            "SpikingJelly recipe takes the text models (token embeddings and a padding mask): "
            "they have spikeport rows only.",
            "",
            "The ViT rows compare different things: spikeport's integer network puts a "
            "bipolar IF neuron in front of every linear layer (dense) and computes LayerNorm, "
            "softmax, GELU and the products of two activations with integer functions on "
            "running sums (the products read their operands' running sums, "
            "`--product-operands analog`, the default since 2026-11-30); SpikingJelly's STA "
            "recipe keeps every Linear and those operators in float on running sums and only "
            "spikes in the encoders after them, and its `time_steps` is a conversion parameter, "
            "so each T is a "
            "separate conversion. Its `mode='equivalent'` (no spikes at all) equals the ANN at "
            "every T by construction and is not listed.",
        ]
    head = "| model | method | ANN | " + " | ".join(f"T={t}" for t in ts) + " |"
    lines += ["", "Test accuracy (%):", "", head, "|---|---|---:|" + "---:|" * len(ts)]
    for name, m in models.items():
        for r in m["rows"]:
            accs = " | ".join(pct(r["accuracy"].get(str(t))) for t in ts)
            lines.append(f"| {name} | {LABELS[r['method']]} | {pct(m['ann'])} | {accs} |")
    ft = [
        f"{name} {r['finetune_seconds']:.0f} s ({r.get('finetune_epochs', 20)} epochs)"
        for name, m in models.items()
        for r in m["rows"]
        if "finetune_seconds" in r
    ]
    per_model = [f"{name} {m['seconds']:.0f} s" for name, m in models.items() if "seconds" in m]
    lines += [
        "",
        f"![accuracy vs T]({PLOT})",
        "",
        f"Fine-tuning time in this run (one process, {threads(doc)}): "
        + ", ".join(ft)
        + " (`benchmarks/finetune.py` measures fine-tuning further: seeds, T = 2, torchrun; "
        "see [docs/finetune.md](../docs/finetune.md)). Whole time per model (conversion, "
        "fine-tuning, SpikingJelly, every evaluation): " + ", ".join(per_model) + ".",
    ]
    lines += activity_md(doc)
    return lines


def activity_md(doc: dict[str, Any]) -> list[str]:
    """Events and synaptic operations per inference, every row that reports them."""
    ts = doc["timesteps"]
    head = "| model | method | " + " | ".join(f"T={t}" for t in ts) + " |"
    lines = [
        "",
        "Events and synaptic operations per inference over T steps, test split, same runs. "
        "An event is a neuron's nonzero output at one step (spikeport: `eval`'s "
        "`spikes_per_inference`, a signed spike counted once; SpikingJelly: its IF neurons' "
        "spikes, counted by forward hooks). A synaptic operation is one (nonzero input, "
        "output it reaches) pair of a convolution or dense layer at one step, exact fan-out "
        "(`eval`'s `synaptic_ops_per_inference`; SpikingJelly's convolutions, Linear and "
        "average pooling counted the same way); the first layer's analog input current counts "
        "too. In spikeport's transformers the expectation-compensated operators (softmax, "
        "LayerNorm, GELU, attention products) send multi-bit values, not spikes: their "
        "nonzero outputs count as synaptic inputs, but not as events.",
    ]
    for key, title in (
        ("events_per_inference", "Events per inference"),
        ("bits_per_event", "Bits per event (graded rows: b, or b + 1 where neurons are signed)"),
        ("synaptic_ops_per_inference", "Synaptic operations per inference"),
    ):
        lines += ["", f"{title}:", "", head, "|---|---|" + "---:|" * len(ts)]
        for name, m in doc["models"].items():
            for r in m["rows"]:
                if key in r:
                    vals = " | ".join(count(r[key].get(str(t))) for t in ts)
                    lines.append(f"| {name} | {LABELS[r['method']]} | {vals} |")
    return lines


CHOSEN_NOTE = (
    '"Whichever scores higher on calibration": per seed, of the two runs it names, the one '
    "whose integer accuracy at T on the calibration split is higher (a tie: the first), a "
    "choice made without the test split; its time is both runs'. "
)


def few_step_md(doc: dict[str, Any]) -> list[str]:
    T = str(doc["T"])  # JSON keys: the accuracies are by str(T)
    seeds = sorted({r["seed"] for m in doc["models"].values() for r in m["rows"]})
    lines = [
        f"## 1b. Fine-tuning at T = {T}, {len(seeds)} seeds",
        "",
        provenance(doc),
        "",
        f"`convert -T {T}` (T-aware), then `{doc['finetune_command']}` for each seed (no "
        "`--val`: the last epoch is kept), then `quantize --target sim` and `eval`, integer mode, "
        "held-out test split. Labels only: the cross-entropy of every step's running mean "
        "(the default loss). Distilled: `--teacher` the source ONNX file, weight 1 "
        f"(`--distill` default with a teacher), temperature {doc['temperature']:g}: the "
        "KL divergence of every step's running mean from the source model's soft labels "
        "on the training split. Augmented (`--shift 1`, where the loss names it): every "
        "training image moved by a new random offset of up to one pixel per axis each epoch "
        "(zero fill), the teacher asked on the moved images, and more epochs (column E). "
        + "".join(
            f"Blended (`--mixup {a:g}`, where the loss names it): each training image mixed "
            f"with another of its batch, weights from Beta({a:g}, {a:g}), the teacher asked on "
            "the blend. "
            for a in sorted(
                {
                    v["mixup"]
                    for run in [doc, *(doc.get("later_runs") or [])]
                    for v in run.get("variants") or []
                    if v.get("mixup")
                }
            )
        )
        + (CHOSEN_NOTE if doc.get("chosen_between") else "")
        + "Gap: the ANN minus the worst seed; in brackets, where the run recorded them, the "
        "worst seed's test samples only the ANN and only the SNN classify right, and the "
        "exact McNemar test's p-value that the two are equally accurate.",
        "",
        *_few_step_table(doc),
    ]
    for later in doc.get("later_runs") or []:
        lines += ["", f"### Re-measured later: {_few_step_labels(later)}", "", provenance(later)]
        lines += ["", *_few_step_table(later)]
    return lines


def _few_step_labels(doc: dict[str, Any]) -> str:
    """'MODELS, RECIPES' of a partial few-step run, for its table's heading."""
    recipes = "; ".join(v["label"] for v in doc.get("variants") or [])
    return f"{', '.join(doc['models'])} ({recipes})"


def _few_step_table(doc: dict[str, Any]) -> list[str]:
    """The few-step run's table: a row per model and recipe, a column per seed."""
    T = str(doc["T"])  # JSON keys: the accuracies are by str(T)
    seeds = sorted({r["seed"] for m in doc["models"].values() for r in m["rows"]})
    lines = [
        f"| model | ANN | conversion T={T} | loss | E | "
        + " | ".join(f"seed {k}" for k in seeds)
        + " | gap (worst) | fine-tuning time per seed (s) |",
        "|---|---:|---:|---|---:|" + "---:|" * len(seeds) + "---:|---:|",
    ]
    # results written before the augmented variant named none: labels only and distilled
    variants = doc.get("variants") or [
        {"label": "labels only", "distill": 0.0, "shift": 0, "epochs": doc["epochs"]},
        {"label": "distilled", "distill": 1.0, "shift": 0, "epochs": doc["epochs"]},
    ]
    between = doc.get("chosen_between") or []
    for name, m in doc["models"].items():
        for v in variants:
            rows = [r for r in m["rows"] if r.get("variant", _old_label(r)) == v["label"]]
            lines.append(_few_step_line(name, m, T, v["label"], v["epochs"], rows))
        if between:
            chosen = _chosen_on_calib(m["rows"], between)
            label = f"{' or '.join(between)}, whichever scores higher on calibration"
            both = [r for r in m["rows"] if r["variant"] in between]
            secs = sum(r["finetune_seconds"] for r in both) / len(chosen)  # both runs per seed
            lines.append(_few_step_line(name, m, T, label, chosen[0]["epochs"], chosen, secs))
    return lines


def _few_step_line(
    name: str,
    m: dict[str, Any],
    T: str,
    label: str,
    epochs: int,
    rows: list[dict[str, Any]],
    secs: float | None = None,
) -> str:
    """One row of the few-step table; `secs` the fine-tuning time per seed (default: the
    rows' mean)."""
    rows = sorted(rows, key=lambda r: r["seed"])
    accs = [r["accuracy"][T] for r in rows]
    worst = min(rows, key=lambda r: r["accuracy"][T])  # its gap and its paired counts
    if secs is None:
        secs = sum(r["finetune_seconds"] for r in rows) / max(1, len(rows))
    return (
        f"| {name} | {pct(m['ann'])} | {pct(m['conversion']['accuracy'][T])} | "
        f"{label} | {epochs} | "
        + " | ".join(pct(a) for a in accs)
        + f" | {100 * (m['ann'] - worst['accuracy'][T]):.2f}{_paired(worst, T)} | {secs:.0f} |"
    )


def _paired(row: dict[str, Any], T: str) -> str:
    """' (b / c, p P)': of the worst seed, the test samples only the ANN and only the SNN
    classify right and the exact McNemar p-value (runs before eval reported it: '')."""
    paired = (row.get("paired_with_ann") or {}).get(T)
    if paired is None:
        return ""
    return f" ({paired['ann_only']} / {paired['snn_only']}, p {paired['p_value']:.2g})"


def _chosen_on_calib(rows: list[dict[str, Any]], between: list[str]) -> list[dict[str, Any]]:
    """Per seed, the row of the variants `between` with the best calibration-split accuracy
    (the first variant on a tie): a choice made without the test split."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        mine = {r["variant"]: r for r in rows if r["seed"] == seed and r["variant"] in between}
        out.append(max((mine[v] for v in between), key=lambda r: r["calib_accuracy"]))
    return out


def _old_label(row: dict[str, Any]) -> str:
    return "distilled" if row["distill"] else "labels only"


def throughput_md(doc: dict[str, Any]) -> list[str]:
    th = doc.get("threads") or {"torch": doc["machine"]["torch_threads"], "blas": "?"}
    lines = [
        "## 2. Simulator throughput",
        "",
        provenance(doc),
        "",
        f"Samples x timesteps per second, batch {doc['batch']}, T = {doc['T']}, best of "
        f"{doc['repeats']} timings each (a timing repeats a call until it lasts "
        f"{doc['min_timing_s']} s), all runners interleaved in the same loop (so the "
        "ratios compare the same moments of machine load). Threads: spikeport and "
        f"SpikingJelly run in this one process on the same torch pool of {th['torch']} "
        f"thread(s), numpy's BLAS on {th['blas']} (`spikeport.threads.set_threads`, "
        "`benchmarks/run.py --threads`). spikeport: `spikeport.sim.Simulator.run` on a "
        "simulator made once per network (as SpikingJelly's network is converted once; its "
        "setup, the range proof and the fast kernels, is timed apart: last column), the fast "
        "backend (torch, layer by layer over all T, int8 synaptic products where the proof "
        "bounds their inputs; in integer mode the loops over steps of the neurons, adds and "
        "sequence operators in C, `spikeport/sim/csrc/`, where the run's header says 'C "
        "kernels'; bit-equal to the reference in integer mode) in integer and "
        "float mode, and the numpy reference backend in integer mode. "
        "SpikingJelly: its torch simulation (float32, CPU) of the network its "
        "channel-wise half-threshold recipe made from the same ONNX weights, single-step "
        "(T calls, as its example's loop) and multi-step (one call on T copies); for the ViT "
        "its STA spiking-encoder network converted for T (multi-step only; float Linear, "
        "LayerNorm, softmax and GELU, see section 1, so not the same computation); "
        "ratio = spikeport / the faster SpikingJelly mode (above 1: spikeport is faster). "
        "bench_resnet is the digits' two-block residual net (1x8x8); resnet18_w16 is the "
        "ResNet-18 shape of section 3 (`benchmarks/resnet.py`: 3x32x32, four stages of two "
        "basic blocks, width 16, random weights, N(0, 1) images), SpikingJelly's side "
        "`benchmarks/nets.py` ResNet18 with the same weights.",
        "",
        "| model | spikeport int | spikeport float | spikeport int, reference "
        "| SpikingJelly single-step | SpikingJelly multi-step | int / SJ | float / SJ "
        "| int reference / SJ | int setup (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        s = r["samples_x_steps_per_s"]
        cols = [
            f"{s[k]:,.0f}" if k in s else "-"
            for k in ("spikeport_int", "spikeport_float", "spikeport_int_reference", "sj_s", "sj_m")
        ]
        ratio = r.get("ratio_vs_spikingjelly") or {}
        rr = [f"{ratio[k]:.2f}" if k in ratio else "-" for k in ("int", "float", "int_reference")]
        setup = r.get("setup_s", {}).get("int")
        rr.append(f"{setup * 1e3:.1f}" if setup is not None else "-")
        lines.append(f"| {r['model']} | " + " | ".join(cols + rr) + " |")
    return lines


def peak(stage: dict[str, Any]) -> str:
    """A stage's peak resident set, MiB, with the part above its baseline in brackets."""
    return f"{stage['peak_rss_mib']:,.0f} [{stage['peak_above_baseline_mib']:,.0f}]"


def quantize_memory_md(doc: dict[str, Any]) -> list[str]:
    lines = [
        "## 3b. Quantize time and memory",
        "",
        provenance(doc),
        "",
        "`quantize --target sim` in a fresh process (`benchmarks/stage.py`) on the "
        "ResNet-18-shaped networks of section 3 (converted once, `tune=False`), with "
        f"calibration sets of different sizes ({doc['calibration']}). Peak memory: the "
        "process's peak resident set (VmHWM); in brackets the part above the process before "
        "the stage (imports, the loaded graph, the calibration data). Quantize reads the "
        "ANN view's peaks streamed over batches of 16 of at most 256 samples, keeping one "
        "maximum per tensor, so memory should not grow with the samples.",
        "",
        "| model | parameters | calibration samples | quantize (s) | quantize peak (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        q = r["quantize"]
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['calibration_samples']} | "
            f"{q['seconds']:.1f} | {peak(q)} |"
        )
    return lines


def encoder_memory_md(doc: dict[str, Any]) -> list[str]:
    lines = ["## 3c. A 22M-parameter text encoder: convert and quantize memory", ""]
    if "skipped" in doc:
        return lines + [f"Skipped: {doc['skipped']}."]
    lines += [
        provenance(doc),
        "",
        f"{doc['model']}, {doc['parameters']:,} parameters, calibrated on "
        f"{doc['calibration_sentences']} sentences of 32 tokens (the first of the zoo's topic "
        "set: only memory is read here). Each stage in a fresh process (`benchmarks/stage.py`); "
        "peak: the process's peak resident set (VmHWM), in brackets the part above the process "
        "before the stage. Issue #20's bar: each under 2 GB (2,048 MiB).",
        "",
        "| conversion | convert (s) | convert peak (MiB) | quantize --target sim (s) "
        "| quantize peak (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        c, q = r["convert"], r["quantize"]
        lines.append(
            f"| {r['conversion']} | {c['seconds']:.0f} | {peak(c)} | {q['seconds']:.0f} | "
            f"{peak(q)} |"
        )
    return lines


def share(extra: dict[str, Any]) -> str:
    """Extra neurons, with their percentage of the features split (where recorded)."""
    made, of = extra["made"], extra.get("features")
    return f"{made:,}" + (f" ({100 * made / of:.0f} % of {of:,})" if of else "")


def _encoder_md(doc: dict[str, Any], title: str, what: str) -> list[str]:
    """A table of benchmarks/encoder.py rows (run.py's encoder sections): each row's cosine
    and relative error to the ANN at the bar's T, against issue #16's bar."""
    lines = [title, ""]
    if "skipped" in doc:
        return lines + [f"Skipped: {doc['skipped']}."]
    first = doc["rows"][0]
    t, bar = first["bar"]["T"], first["bar"]["cosine_to_ann"]
    lines += [
        provenance(doc),
        "",
        f"{doc['model']} (benchmarks/zoo) converted for T = {t} with {first['spike_bits']}-bit "
        f"spikes, quantized for `sim`, run in integer mode on {first['test_sentences']} "
        "held-out sentences (topics the calibration never saw); score: the mean over them of "
        "the cosine between the spiking network's sentence embedding (its mean over T steps) "
        f"and onnxruntime's. {what} Issue #16's bar: a mean cosine of at least {bar} at "
        f"T = {t}. Extra neurons: the outlier split's (`convert --extra-neurons`), with "
        "their share of the neurons in front of the dense layers.",
        "",
        f"| conversion | extra neurons | cosine at T = {t} | relative error | bar met "
        "| convert (s) | fine-tune (s) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in doc["rows"]:
        cos, err = (r[k][str(t)] for k in ("cosine_to_ann", "relative_error_to_ann"))
        before = r.get("finetune", {}).get("cosine_to_ann_before", {}).get(str(t))
        shown = f"{cos:.4f}" + ("" if before is None else f" ({before:.4f} before)")
        sec = r["seconds"]
        tuned = f"{sec['finetune']:.0f}" if "finetune" in sec else "-"
        lines.append(
            f"| {r['label']} | {share(r['extra_neurons'])} | {shown} | {err:.3f} | "
            f"{'yes' if r['bar']['met'] else 'no'} | {sec['convert']:.0f} | {tuned} |"
        )
    return lines


def encoder_fidelity_md(doc: dict[str, Any]) -> list[str]:
    return _encoder_md(
        doc,
        "## 3d. A pretrained text encoder at T = 16: fidelity to the ANN, conversion only",
        "Conversion only: the default T-aware conversion on the zoo's 64 calibration "
        "sentences, and the same with `--extra-neurons 2`.",
    )


def encoder_fidelity_tuned_md(doc: dict[str, Any]) -> list[str]:
    return _encoder_md(
        doc,
        "## 3e. The same text encoder fine-tuned at T = 16",
        "The T-aware search on 256 calibration sentences (`convert --tune-samples 256`, "
        "the default neuron count), then `finetune --teacher` on the zoo's unlabelled "
        "training sentences (its own ONNX embeddings as targets) for two epochs at lr 3e-5 "
        "with a 10 % warmup, through the weights quantize gives (`--qat sim`); in brackets "
        "the conversion it started from.",
    )


def cost_md(doc: dict[str, Any]) -> list[str]:
    lines = [
        "## 3. Conversion and quantisation cost",
        "",
        provenance(doc),
        "",
        "Each stage runs in a fresh process (`benchmarks/stage.py`): `convert` with its "
        "defaults (import, calibration on the graph's ANN view, threshold balancing, and the "
        "T-aware search for T = 4, the part that takes the time) and `quantize --target sim` "
        "(integers and the overflow proof for T <= 64). Peak memory is the process's peak "
        "resident set (VmHWM: numpy and onnxruntime's native memory included); in brackets "
        "the part above the process before the stage (imports, inputs, the loaded graph). "
        "ResNet-18-shaped networks: `benchmarks/resnet.py` (CIFAR stem, 32x32x3 input, "
        f"four stages of two basic blocks, random He-normal weights), calibrated on "
        f"{doc['resnet_calibration']}; resnet18_w64 is ResNet-18's own width. Last column: "
        "the integer simulator right after quantize, batch 4, T = 4, best of two runs.",
        "",
        "| model | parameters | calibration samples | convert (s) | convert peak (MiB) "
        "| quantize (s) | quantize peak (MiB) | int sim, batch 4 (samples x T / s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        c, q = r["convert"], r["quantize"]
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['calibration_samples']} | "
            f"{c['seconds']:.2f} | {peak(c)} | {q['seconds']:.2f} | {peak(q)} | "
            f"{r['sim_int']['samples_x_steps_per_s']:,.1f} |"
        )
    return lines


def c_target_md(doc: dict[str, Any]) -> list[str]:
    lines = [
        "## 4. C target on Cortex-M3 (QEMU mps2-an385)",
        "",
        provenance(doc),
        "",
        "`spikeport quantize --target c`, `emit --target c`, then "
        "`spikeport.targets.c.flash.flash_qemu` (what `spikeport flash --board qemu-mps2-an385` "
        "runs): 4 test inputs checked bit for bit against the simulator at every step, "
        "`model.o` sizes from arm-none-eabi-size (-Os -mcpu=cortex-m3; harness and libc "
        "excluded; flash = text + data, RAM = data + bss: the packed spikes and scratch of a "
        "layer-major model, the state struct and step arenas of a step-major one, planned by "
        "liveness), and the Thumb-2 instructions one `spk_run()` of T steps executes "
        "under QEMU (not cycles: QEMU is not cycle-accurate). The transformers' integer "
        "functions run on int64; the Cortex-M3 divides 64-bit integers in libgcc "
        "(`__aeabi_ldivmod`, `__udivmoddi4`): last column, their share of the instructions.",
        "",
        "| model | T | flash (B) | RAM (B) | instructions / inference | in 64-bit division |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        if "refused" in r or "skipped" in r:
            lines.append(
                f"| {r['model']} | - | - | - | - ({r.get('refused') or r['skipped']}) | - |"
            )
            continue
        share = r["instructions_in_int64_division"] / max(r["instructions_per_inference"], 1)
        lines.append(
            f"| {r['model']} | {r['T']} | {r['flash_bytes']:,} | {r['ram_bytes']:,} | "
            f"{r['instructions_per_inference']:,} | {100 * share:.1f} % |"
        )
    return lines


def c_kernels_md(doc: dict[str, Any]) -> list[str]:
    lines = ["## 5. C kernels against an int8 ANN (Cortex-M3, QEMU)", "", provenance(doc), ""]
    if "skipped" in doc:
        return lines + [f"Skipped: {doc['skipped']}."]
    ts = doc["T"]
    lines += [
        "spikeport's C (`quantize --target c --max-T 8`, `emit` with its defaults: the schedule "
        "below, event-driven synapses where the calibration activity makes them cheaper; RAM "
        "depends on max-T, which sizes the packed spikes of a layer-major model) against the "
        "same network "
        "as an int8 ANN (`benchmarks/int8_ann.py`: TFLite's int8 quantization, kernels written "
        "as TFLite Micro's reference kernels), one harness, instructions per inference under "
        "QEMU (not cycles), `model.o` flash and RAM. Ratio: SNN instructions / ANN instructions.",
        "",
        "| model | opt | int8 ANN instr. | "
        + " | ".join(f"SNN T={t} (ratio)" for t in ts)
        + " | flash SNN / ANN (B) | RAM SNN / ANN (B) |",
        "|---|---|---:|" + "---:|" * len(ts) + "---:|---:|",
    ]
    for r in doc["rows"]:
        for opt in ("-Os", "-O2"):
            m = r[opt]
            cells = " | ".join(
                f"{m['snn']['instructions'][str(t)]:,} ({m['ratio'][str(t)]:.2f})" for t in ts
            )
            lines.append(
                f"| {r['model']} | {opt} | {m['int8_ann']['instructions']:,} | {cells} | "
                f"{m['snn']['flash_bytes']:,} / {m['int8_ann']['flash_bytes']:,} | "
                f"{m['snn']['ram_bytes']:,} / {m['int8_ann']['ram_bytes']:,} |"
            )
    accs = ", ".join(f"{r['model']} {100 * r['int8_ann_accuracy']:.2f} %" for r in doc["rows"])
    ram = ", ".join(
        f"{r['model']} {r.get('schedule', {}).get('schedule', 'step-major')} "
        f"(RAM {r['-Os']['ram_ratio']:.2f}x the ANN's)"
        for r in doc["rows"]
    )
    return lines + [
        "",
        f"Schedule: {ram}.",
        "",
        f"int8 ANN test accuracy (numpy twin, equal to its C on the host): {accs}.",
    ]


def plot(doc: dict[str, Any], path: Path) -> None:
    """Per model a full-range panel and, below it, the 90-100 % range; four models a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = doc["timesteps"]
    models = doc["models"]
    cols = min(4, len(models))
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(4.6 * cols, 3.6 * 2 * rows + 1), squeeze=False
    )
    styles = {
        "spikeport": dict(color="C0", lw=2.5, marker="o"),
        "spikeport_percentile": dict(color="C0", lw=1.2, ls=":", marker="o"),
        "spikeport_b2": dict(color="C2", lw=2.0, marker="D"),
        "spikeport_b4": dict(color="C3", lw=2.0, marker="D"),
        "spikeport_finetuned": dict(color="C1", lw=2.5, marker="s"),
    }
    for ax in axes.flat:
        ax.set_visible(False)
    for i, (name, m) in enumerate(models.items()):
        for sub, (lo, title) in enumerate([(0, name), (90, f"{name} (90-100 %)")]):
            ax = axes[2 * (i // cols) + sub][i % cols]
            ax.set_visible(True)
            for r in m["rows"]:
                color = f"C{list(LABELS).index(r['method'])}"
                style = styles.get(r["method"], dict(color=color, lw=1.2, marker="^"))
                have = [t for t in ts if str(t) in r["accuracy"]]
                ys = [100 * r["accuracy"][str(t)] for t in have]
                ax.plot(have, ys, label=LABELS[r["method"]], **style)
            ax.axhline(100 * m["ann"], color="k", ls="--", lw=1, label="ANN (onnxruntime)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ts, [str(t) for t in ts])
            ax.set_ylim(lo, 100.5)
            ax.set_title(title)
            ax.set_xlabel("timesteps T")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    ncol = 4 if cols > 2 else 2
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=9)
    fig.suptitle("Accuracy vs T, held-out test splits (make bench)")
    fig.tight_layout(rect=(0, 0.5 / (3.6 * rows), 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


SECTIONS = {
    "accuracy": accuracy_md,
    "few_step": few_step_md,
    "throughput": throughput_md,
    "cost": cost_md,
    "quantize_memory": quantize_memory_md,
    "encoder_memory": encoder_memory_md,
    "encoder_fidelity": encoder_fidelity_md,
    "encoder_fidelity_tuned": encoder_fidelity_tuned_md,
    "c_target": c_target_md,
    "c_kernels": c_kernels_md,
}


def with_remeasured(doc: dict[str, Any], results: Path) -> dict[str, Any]:
    """The accuracy run with the models later partial runs re-measured (results/
    accuracy_remeasured*.json: `run.py --only accuracy --models ...`, copied there; applied in
    the order of their number, _2 after the unnumbered one and _10 after _9, the later file's
    rows winning) in place of its own rows; `remeasured` keeps each run's provenance for the
    section's note. A partial run that started before the full one is superseded by it: its
    file stays (the README cites it) but no longer replaces the newer run's rows."""
    runs = _runs_after(doc, sorted(results.glob("accuracy_remeasured*.json"), key=_run_number))
    if not runs:
        return doc
    models = dict(doc["models"])
    for later in runs:
        for name, entry in later["models"].items():
            if "row_kinds" in later and name in models:  # a run of some kinds of rows only
                entry = {**models[name], "rows": _merged_rows(models[name]["rows"], entry["rows"])}
            models[name] = entry
    return {**doc, "models": models, "remeasured": runs}


def with_later_few_step(doc: dict[str, Any], results: Path) -> dict[str, Any]:
    """The few-step run with the partial runs started after it (results/few_step_*.json:
    `run.py --only few_step --models ... --variants ...`, copied there under a name of their
    own) as `later_runs`, oldest first. Each is shown as its own table, not merged into the
    full run's: a later run starts from the conversion of its day, so its rows and the full
    run's need not share a starting point."""
    later = _runs_after(doc, results.glob("few_step_*.json"))
    later.sort(key=lambda r: (r["started"], r["data_file"]))
    return {**doc, "later_runs": later} if later else doc


def _runs_after(doc: dict[str, Any], files: Iterable[Path]) -> list[dict[str, Any]]:
    """The partial runs of `files` (in their order) that started after the full run `doc`,
    each with its own file's name as `data_file` (provenance names it)."""
    runs = [{**json.loads(p.read_text()), "data_file": p.name} for p in files]
    return [r for r in runs if r["started"] > doc["started"]]  # "%Y-%m-%d %H:%M:%S" sorts


def _run_number(path: Path) -> int:
    """accuracy_remeasured_N.json -> N; the first one, unnumbered, -> 1."""
    tail = path.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else 1


def _merged_rows(rows: list[dict[str, Any]], later: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with each row of a method `later` measured again replaced in place (new ones
    appended): the tables keep their order; the model's times stay the whole run's."""
    by_method = {r["method"]: r for r in later}
    merged = [by_method.pop(r["method"], r) for r in rows]
    return merged + list(by_method.values())


def write(results: Path = HERE / "results", out: Path = HERE) -> None:
    docs = {
        name: json.loads((results / f"{name}.json").read_text())
        for name in SECTIONS
        if (results / f"{name}.json").exists()
    }
    if "accuracy" in docs:
        docs["accuracy"] = with_remeasured(docs["accuracy"], results)
    if "few_step" in docs:
        docs["few_step"] = with_later_few_step(docs["few_step"], results)
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench`: `benchmarks/install_spikingjelly.sh` (SpikingJelly for the "
        "benchmarks only, see below) then `.venv/bin/python benchmarks/run.py`, which runs the "
        f"{len(SECTIONS)} sections below in one process on one machine and writes "
        "`benchmarks/results/<section>.json`, this file and `accuracy_vs_T.png`. Each table "
        "names the command and the run it came from; ratios are taken within one run, never "
        "across runs. Nothing here is asserted in tests.",
    ]
    if docs:
        mach = next(iter(docs.values()))["machine"]
        lines += [
            "",
            f"Machine: {mach['platform']}, {mach['cpus']} CPUs, Python {mach['python']}, "
            f"numpy {mach['numpy']}, torch {mach['torch']}, "
            f"onnxruntime {mach['onnxruntime']}. Wall-clock figures depend on the machine and "
            "its load (the load average at each section's start is given).",
        ]
    for name, fn in SECTIONS.items():
        if name in docs:
            lines += ["", *fn(docs[name])]
    lines += [
        "",
        "## SpikingJelly, for the benchmarks only",
        "",
        "`benchmarks/install_spikingjelly.sh` installs spikingjelly 2.0.0 with `pip install "
        "--no-deps --target benchmarks/work/sjlib` (its declared torchvision and torchaudio "
        "would pull a CUDA torch of several GB) and, into the same folder, the two small "
        "packages its ann2snn imports (loguru, requests with its own dependencies). "
        "`benchmarks/peer_sj.py` appends that folder to `sys.path`; it is not in `.venv` and "
        "not a dependency of spikeport (pyproject.toml does not name it). `make clean` "
        "removes it.",
    ]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    if "accuracy" in docs:
        plot(docs["accuracy"], out / PLOT)


if __name__ == "__main__":
    write()
