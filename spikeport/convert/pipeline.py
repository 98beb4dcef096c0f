"""`convert`: source model + calibration data -> float spiking graph (stage "snn")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from spikeport import __version__
from spikeport.convert.balance import (
    DEFAULT_INPUT_PERCENTILE,
    DEFAULT_PERCENTILE,
    PRODUCT_OPERANDS,
    balance_thresholds,
    channel_axes,
    grade_neurons,
    sign_neurons,
)
from spikeport.convert.calibrate import collect, ir_runner
from spikeport.convert.fold import fold_offsets
from spikeport.convert.onnx_import import import_onnx
from spikeport.convert.pool_currents import pool_currents as move_neurons_behind_pools
from spikeport.convert.split import EXTRA_NEURONS, MAX_COPIES
from spikeport.convert.tune import SEARCHES, t_aware
from spikeport.data import check_token_ids, load_data
from spikeport.errors import BadInput
from spikeport.fileio import existing_file, read_npz
from spikeport.ir.graph import Graph
from spikeport.threads import release_freed_memory

DEFAULT_TIMESTEPS = 4


def import_model(
    path: str | os.PathLike[str],
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    data_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Read a source model by its extension into an "ann" graph (ONNX dynamic axes: see
    import_onnx), constants after neurons folded into the linear layers that read them."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return fold_offsets(import_onnx(path, input_shapes, data_shapes))
    if suffix == ".tflite":
        from spikeport.convert.tflite_import import import_tflite  # needs ai-edge-litert

        return fold_offsets(import_tflite(path))
    raise BadInput(f"{path}: unknown model format '{suffix}' (supported: .onnx, .tflite)")


def sample_shapes(calib: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of a data file's arrays, by key: what fixes a model's dynamic axes."""
    path = existing_file(calib, "calibration data")
    return {k: tuple(int(d) for d in v.shape[1:]) for k, v in read_npz(path, str(path)).items()}


def convert(
    model: str | os.PathLike[str],
    calib: str | os.PathLike[str],
    percentile: float = DEFAULT_PERCENTILE,
    per_channel: bool = True,
    signed: bool | None = None,
    timesteps: int = DEFAULT_TIMESTEPS,
    input_percentile: float = DEFAULT_INPUT_PERCENTILE,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    tune: bool = True,
    spike_bits: int = 1,
    layer_spike_bits: Mapping[str, int] | None = None,
    product_operands: str = "analog",
    extra_neurons: float = EXTRA_NEURONS,
    tune_samples: int | None = None,
    quiet: bool = False,
    search: str = "full",
    pool_currents: bool = False,
) -> Graph:
    """Import, calibrate on `calib` and balance thresholds. ONNX graphs calibrate on their own
    ANN view (tested equal to onnxruntime; it exposes tensors that exist only in the IR, such
    as the inputs of fused linear layers); TFLite graphs on LiteRT. `input_shapes` (per-sample,
    by input name) fixes dynamic axes; by default the calibration data does. `spike_bits` b
    gives every neuron graded spikes of b bits (1: binary), `layer_spike_bits` per neuron by
    name (balance.grade_neurons). `product_operands` (balance.PRODUCT_OPERANDS): what the
    products of two activations read, their operands' running sums or spikes. `extra_neurons`:
    T-aware conversion gives the outlier features of the neurons in front of dense layers up
    to this share of a layer's features in extra neurons (split.py). `tune_samples`: the
    calibration samples T-aware conversion runs on (default: as many as its memory budget
    allows, tune.MEMORY_BUDGET). `search` (tune.SEARCHES): "full", every T-aware candidate, or
    "quick", the search for T alone (a large image's conversion in a fraction of the time).
    `signed`: True gives every neuron that is not bipolar signed spikes (it may take a spike
    back; only the C target runs them), False none; None (the default) lets T-aware
    conversion at T > 1 with the full search and binary neurons try the signed twin of its
    chosen search as one more candidate (tune.t_aware's `signed_twin`), else it is False.
    `pool_currents`: move each neuron a max pool alone reads behind it, so that the pool
    takes the max of currents (pool_currents.py; before the T-aware search, which sets the
    moved neurons' thresholds; the C target and the simulator run it).
    `quiet`: no progress bar for the T-aware search (it shows
    only on a terminal anyway)."""
    if timesteps < 1:
        raise BadInput(f"-T must be at least 1, got {timesteps}")
    for name, p in (("percentile", percentile), ("input percentile", input_percentile)):
        if not 0 < p <= 100:
            raise BadInput(f"{name} {p} is not in (0, 100]")
    if not 0 <= extra_neurons <= MAX_COPIES - 1:
        raise BadInput(f"--extra-neurons must be in [0, {MAX_COPIES - 1}], got {extra_neurons}")
    if tune_samples is not None and tune_samples < 1:
        raise BadInput(f"--tune-samples must be at least 1, got {tune_samples}")
    if search not in SEARCHES:
        raise BadInput(f"--search must be one of {SEARCHES}, got '{search}'")
    if not tune:  # options of the search it turns off: refused, not silently dropped
        given = [n for n, v in (("--extra-neurons", extra_neurons != EXTRA_NEURONS),
                                ("--tune-samples", tune_samples is not None),
                                ("--search", search != "full"),
                                ("--pool-currents", pool_currents)) if v]  # fmt: skip
        if given:
            raise BadInput(
                f"{' and '.join(given)} set{'s' * (len(given) == 1)} the T-aware search, "
                "which --no-t-aware turns off"
            )
    ann = import_model(model, input_shapes, sample_shapes(calib))
    data = load_data(calib, ann.inputs)
    check_token_ids(ann, data.x, calib)  # before calibration indexes the tables with them
    release_freed_memory()  # what reading the model took (onnxruntime's optimiser: 225 MiB)
    if ann.meta["source"]["format"] == "tflite" and not ann.meta["tflite"].get("own_kernels"):
        from spikeport.convert.litert import litert_runner

        runner = litert_runner(model, ann)
    else:  # ONNX, or a TFLite file with custom ops LiteRT cannot run (the import notes say so)
        runner = ir_runner(ann)
    if product_operands not in PRODUCT_OPERANDS:
        raise BadInput(f"--product-operands must be one of {PRODUCT_OPERANDS}")
    lowest = min(percentile, input_percentile)
    stats = collect(ann, runner, data.x, lowest, product_operands=product_operands)
    # At one step a signed neuron is the unsigned one (it has fired nothing it could take
    # back), so the search for T = 1 runs on unsigned neurons and they are signed after it.
    # Searched signed, its 2- and 4-step candidates differed: on the held-out CNN family
    # (benchmarks/cnn_family.py --signed) T = 1 lost 0.90 points on average, none gained.
    signed_search = bool(signed) and not (tune and timesteps == 1)
    snn = balance_thresholds(
        ann, stats, percentile, per_channel, signed_search, input_percentile, product_operands
    )
    grade_neurons(snn, spike_bits, dict(layer_spike_bits or {}))
    if tune:
        axes = channel_axes(ann)
        if pool_currents:
            snn.meta["conversion"]["pooled_currents"] = move_neurons_behind_pools(snn)
            axes |= channel_axes(snn)  # the pools' new outputs: the currents they pool
        # balance copied what the search needs (85 MiB of a 22M-weight encoder); the freed
        # heap of calibration goes back too (180 MiB there)
        del ann, stats, runner
        release_freed_memory()
        twin = signed is None  # neither --signed nor --unsigned: the calibration decides
        snn, record = t_aware(
            snn, data.x, timesteps, axes, extra_neurons, tune_samples, quiet, search, twin
        )
        snn.meta["conversion"]["t_aware"] = record
    if signed and not signed_search:
        sign_neurons(snn)
    snn.meta["calibration"] = data.provenance
    snn.meta["default_timesteps"] = timesteps
    snn.meta["spikeport_version"] = __version__
    return snn
