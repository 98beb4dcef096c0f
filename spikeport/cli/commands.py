"""The verbs of DESIGN.md section 5."""

from __future__ import annotations

from collections.abc import Callable

import click

from spikeport.cli.main import (
    PERCENTILE,
    QUIET,
    TIMESTEPS,
    main,
    output_file,
    parse_timesteps,
    refuse_overwrite,
    say,
)
from spikeport.convert import DEFAULT_PERCENTILE, DEFAULT_TIMESTEPS, convert
from spikeport.convert.balance import DEFAULT_INPUT_PERCENTILE, PRODUCT_OPERANDS
from spikeport.convert.split import EXTRA_NEURONS
from spikeport.convert.tune import MEMORY_BUDGET, SEARCHES, TUNE_SAMPLES
from spikeport.data import check_token_ids, load_data
from spikeport.errors import BadInput
from spikeport.ir import load, save
from spikeport.ir.check import MAX_SPIKE_BITS
from spikeport.progress import progress
from spikeport.quantize import DEFAULT_MAX_TIMESTEPS, PROFILES, get_profile, quantize
from spikeport.quantize.rounding import NEAREST, ROUNDINGS
from spikeport.targets import discover

discover()  # every target registers its quantize profile before --target lists them

OUT = click.option(
    "-o", "--output", "output", required=True, callback=output_file, help="Output file."
)


def _choice(flag: str, choices: tuple[str, ...], default: str, help: str) -> Callable:
    """A click option that takes one of `choices`, its default shown in --help."""
    return click.option(
        flag, type=click.Choice(choices), default=default, show_default=True, help=help
    )


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x3x32x32` -> (NAME, (1, 3, 32, 32)): one input's per-sample shape."""
    name, _, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) < 1:
        raise BadInput(f"--input-shape '{text}' is not NAME=D1xD2... with positive sizes")
    return name, shape


def parse_layer_bits(text: str) -> tuple[str, int]:
    """`NODE=B` -> (NODE, B): one neuron's spike bits."""
    name, _, bits = text.rpartition("=")
    if not name or not bits.isdigit():
        raise BadInput(f"--spike-bits-layer '{text}' is not NODE=B with B a positive integer")
    return name, int(bits)


@main.command("convert")
@click.argument("model")
@click.option("--calib", required=True, help="Calibration .npz (key x).")
@click.option(
    "-T",
    "timesteps",
    type=TIMESTEPS,
    default=DEFAULT_TIMESTEPS,
    show_default=True,
    help="Timesteps the network is meant to run (recorded as its default).",
)
@click.option(
    "--percentile",
    type=PERCENTILE,
    default=DEFAULT_PERCENTILE,
    show_default=True,
    help="Activation percentile that sets each threshold.",
)
@click.option(
    "--per-channel/--per-layer",
    default=True,
    show_default=True,
    help="One threshold per channel or one per layer.",
)
@click.option(
    "--signed/--unsigned",
    default=None,
    help="Signed spikes: a neuron may take a spike back (-1); the C target alone runs them. "
    "Default: at T > 1 with binary spikes the T-aware search tries them as a candidate and the "
    "calibration data decides; --unsigned for Lava, SpiNNaker2 and NIR.",
)
@click.option(
    "--input-percentile",
    type=PERCENTILE,
    default=DEFAULT_INPUT_PERCENTILE,
    show_default=True,
    help="Sequence models: |activation| percentile of the neurons before linear layers.",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME=D1xD2...",
    help="Per-sample shape of an input with dynamic axes (default: the calibration data's).",
)
@click.option(
    "--spike-bits",
    type=click.IntRange(1, MAX_SPIKE_BITS),
    default=1,
    show_default=True,
    help="Graded spikes: each neuron emits a count 0..2^b-1 a step (1: binary spikes).",
)
@click.option(
    "--spike-bits-layer",
    "layer_bits",
    multiple=True,
    metavar="NODE=B",
    help="Spike bits of one neuron node by name, over --spike-bits (repeatable).",
)
@click.option(
    "--t-aware/--no-t-aware",
    "tune",
    default=True,
    show_default=True,
    help="Choose each neuron's threshold for -T on the SNN's own inputs, with a bias "
    "correction (docs/conversion.md); --no-t-aware keeps the percentile thresholds.",
)
@_choice(
    "--product-operands",
    PRODUCT_OPERANDS,
    "analog",
    "Transformers: what a product of two activations (Q K^T, P V) reads: its operands' "
    "running sums (analog, like LayerNorm and softmax) or a bipolar IF neuron's spikes.",
)
@click.option(
    "--extra-neurons",
    type=float,
    default=EXTRA_NEURONS,
    show_default=True,
    metavar="SHARE",
    help="T-aware: extra neurons, at most, as a share of each neuron layer's features, that "
    "outlier features in front of dense layers get to code their values finer (1: up to "
    "twice the neurons; 0: none).",
)
@click.option(
    "--tune-samples",
    type=click.IntRange(min=1),
    metavar="N",
    help="T-aware: run the search on the first N calibration samples, whatever memory "
    f"they take (default: as many as {MEMORY_BUDGET >> 20} MiB a tensor holds, at most "
    f"{TUNE_SAMPLES}; convert says when it leaves samples out).",
)
@_choice(
    "--search",
    SEARCHES,
    "full",
    "T-aware: full: every candidate (searches for T, 2T and 4T steps, with and without "
    "bias correction, centring and pooled scoring), the calibration data picks one; quick: "
    "the search for T alone, for large models (docs/conversion.md: conversion time).",
)
@click.option(
    "--pool-currents",
    is_flag=True,
    help="T-aware: move each neuron that only a max pool reads behind the pool, which then "
    "takes the max of currents: fewer neurons and events, accuracy within a few samples of the "
    "default (docs/conversion.md: up at T = 1 and 2, down at 4 on the nets measured); the C "
    "target and the simulator run it, Lava, SpiNNaker2 and NIR do not.",
)
@OUT
@QUIET
def convert_cmd(
    model: str,
    calib: str,
    timesteps: int,
    percentile: float,
    per_channel: bool,
    signed: bool | None,
    input_percentile: float,
    input_shapes: tuple[str, ...],
    spike_bits: int,
    layer_bits: tuple[str, ...],
    tune: bool,
    product_operands: str,
    extra_neurons: float,
    tune_samples: int | None,
    search: str,
    pool_currents: bool,
    output: str,
    quiet: bool,
) -> None:
    """Import MODEL (.onnx or .tflite), calibrate on CALIB and balance thresholds into a
    spiking graph."""
    refuse_overwrite((output,), (model, calib))
    shapes = dict(parse_input_shape(s) for s in input_shapes)
    graph = convert(
        model,
        calib,
        percentile,
        per_channel,
        signed,
        timesteps,
        input_percentile,
        shapes,
        tune,
        spike_bits,
        dict(parse_layer_bits(s) for s in layer_bits),
        product_operands,
        extra_neurons,
        tune_samples,
        quiet,
        search,
        pool_currents,
    )
    source = graph.meta["source"]
    for note in source.get("notes", []):  # what import did that the user should know
        say(quiet, f"note: {note}")
    save(graph, output)
    n = sum(1 for node in graph.nodes if node.op == "if")
    tuned = graph.meta["conversion"].get("t_aware")
    how = "percentile only"
    if tuned:
        quick = " (quick search)" if tuned["search"] == "quick" else ""
        how = f"T-aware{quick} for T={timesteps}, kept {tuned['kept']}"
    if copies := (tuned or {}).get("split_neurons"):  # convert/split.py
        extra = sum(copies.values())
        how += (
            f", {extra} more neuron{'s' * (extra != 1)} for outlier features in {len(copies)} layer"
        )
        how += "s" * (len(copies) != 1)
    for layer, outcome in (tuned or {}).get("output_refit", {}).items():  # tune._refit_outputs
        if not outcome.startswith("refitted"):
            say(quiet, f"note: output layer {layer} {outcome}")
    moved = graph.meta["conversion"].get("pooled_currents")  # --pool-currents: which moved
    if moved is not None:
        how += f", {len(moved)} neuron layer{'s' * (len(moved) != 1)} behind max pools"
        if not moved:
            say(quiet, "note: --pool-currents: no neuron layer is read by a max pool alone")
    if tuned and tuned["samples"] < tuned["calibration_samples"]:
        how += (
            f", searched on {tuned['samples']} of {tuned['calibration_samples']} calibration "
            "samples (the default limit; --tune-samples N for more)"
        )
    say(
        quiet,
        f"{output}: {len(graph.nodes)} nodes, {n} neuron layers "
        f"(percentile {percentile}, {'per channel' if per_channel else 'per layer'}, {how}"
        f"{f', {spike_bits}-bit graded spikes' if spike_bits > 1 else ''})",
    )


@main.command("quantize")
@click.argument("model")
@click.option("--calib", required=True, help="Calibration .npz (sets the input scale).")
@click.option("--target", type=click.Choice(sorted(PROFILES)), default="sim", show_default=True)
@click.option(
    "--max-T",
    "max_t",
    type=TIMESTEPS,
    default=None,
    help=f"Longest run the overflow proof must cover [default: {DEFAULT_MAX_TIMESTEPS}, or "
    "where that overflows the longest power of two that proves, down to the converted T, "
    "with a note].",
)
@click.option(
    "--weight-rounding",
    type=click.Choice(ROUNDINGS),
    default=NEAREST,
    show_default=True,
    help="How each weight picks its integer: 'nearest' rounds every weight alone; 'feedback' "
    "passes each input column's rounding error on to the columns after it, weighted by the "
    "calibration inputs (GPTQ), so each layer's output errs less: worth a try where integer "
    "mode trails float mode.",
)
@OUT
@QUIET
def quantize_cmd(
    model: str,
    calib: str,
    target: str,
    max_t: int | None,
    weight_rounding: str,
    output: str,
    quiet: bool,
) -> None:
    """Quantize a converted MODEL to integers for a target, proving no overflow."""
    refuse_overwrite((output,), (model, calib))
    graph = load(model)
    data = load_data(calib, graph.inputs)
    check_token_ids(graph, data.x, calib)
    q = quantize(graph, data.x, get_profile(target), max_t, weight_rounding)
    q.meta["quantization"]["calibration"] = data.provenance
    save(q, output)
    quant = q.meta["quantization"]
    for note in quant.get("notes", []):  # what quantize left out or shortened
        say(quiet, f"note: {note}")
    peak = quant["proven_peak"]
    say(
        quiet,
        f"{output}: target {target}, proven peak |value| {peak['value']} "
        f"(node '{peak['node']}') for T <= {quant['max_timesteps']}" + _kind_note(quant),
    )


def _kind_note(quant: dict) -> str:
    """Which neuron kind quantize picked, where the target runs several, and on what."""
    choice = quant.get("kind_choice")
    if choice is None:
        return ""
    scores = ", ".join(
        f"{c['kind']}{'/' + str(c['vth_divisor']) if 'vth_divisor' in c else ''} "
        + (f"{100 * c['agreement']:.1f}%" if "agreement" in c else "refused")
        for c in choice["candidates"]
    )
    kind, T = quant["neuron_kind"], choice["T"]
    return f"; neuron kind {kind} (agreement with the ANN at T={T}: {scores})"


@main.command("eval")
@click.argument("model")
@click.option(
    "--data",
    required=True,
    help="Test .npz (keys x, y; text models: input_ids, attention_mask, y), held out.",
)
@click.option("-T", "timesteps", default="1,2,4,8", show_default=True, help="e.g. 1,2,4,8")
@click.option(
    "--mode",
    type=click.Choice(["int", "float"]),
    default=None,
    help="Simulator mode (default: int for a quantized graph, else float).",
)
@click.option("--onnx", "onnx_path", default=None, help="Source ONNX: ANN reference.")
@click.option("--tflite", "tflite_path", default=None, help="Source .tflite: ANN reference.")
@click.option(
    "--json", "json_path", default=None, callback=output_file, help="Write the report as JSON."
)
@click.option(
    "--plot", "plot_path", default=None, callback=output_file, help="Write accuracy vs T as PNG."
)
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="T:ACC",
    help="Exit 1 when accuracy at T is below ACC; T:cosine_to_ann=0.99 or "
    "T:agreement_with_ann=0.9 gate other metrics (repeatable).",
)
@click.option(
    "--output", "scored", default=None, help="The model output to score (default: the first)."
)
@QUIET
def eval_cmd(
    model: str,
    data: str,
    timesteps: str,
    mode: str | None,
    onnx_path: str | None,
    tflite_path: str | None,
    json_path: str | None,
    plot_path: str | None,
    requires: tuple[str, ...],
    scored: str | None,
    quiet: bool,
) -> None:
    """Accuracy of MODEL at each T on held-out DATA, and its fidelity to the ANN."""
    from spikeport.eval import Requirement, check_requirements, evaluate, markdown_table
    from spikeport.eval.evaluate import missed_message
    from spikeport.eval.report import write_outputs

    refuse_overwrite((json_path, plot_path), (model, data, onnx_path, tflite_path))
    reqs = [Requirement.parse(r) for r in requires]
    ts = sorted(set(parse_timesteps(timesteps)) | {r.T for r in reqs})
    graph = load(model)
    from spikeport.eval.evaluate import output_index

    out_shape = graph.shape(graph.outputs[output_index(graph, scored)])
    classes = len(out_shape) == 1  # class scores: labels (if the file has them) give accuracy
    ds = load_data(data, graph.inputs, n_classes=out_shape[0] if classes else None)
    check_token_ids(graph, ds.x, data)
    mode = mode or ("int" if graph.stage == "int" else "float")
    tuned_for = graph.meta.get("conversion", {}).get("t_aware", {}).get("T")
    if tuned_for is not None and any(t != tuned_for for t in ts):
        say(quiet, f"note: {model} was converted for T={tuned_for} (T-aware); at other T "
            f"it may do worse than `convert -T T` for that T")  # fmt: skip
    with progress(len(ds), f"eval T<={max(ts)}", quiet) as advance:
        report = evaluate(graph, ds, ts, mode, onnx_path, advance, tflite_path, scored)
    missed = check_requirements(report, reqs)
    say(quiet, markdown_table(report))
    if note := report["ann"].get("note"):  # type: ignore[union-attr]
        say(quiet, f"note: {note}")
    write_outputs(report, json_path, plot_path, title=f"{model} ({mode})")
    if missed:
        raise missed_message(missed)
    if reqs:
        say(quiet, f"all {len(reqs)} bars met")


@main.command("inspect")
@click.argument("model")
def inspect_cmd(model: str) -> None:
    """Print a .spk artifact as a table."""
    from spikeport.ir.inspect import describe

    click.echo(describe(load(model)))
