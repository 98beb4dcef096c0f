"""NIR target: model.nir (nir 1.0.x) holding the float spiking network, checked by a round trip
through a real consumer (snnTorch): read back with nir.read, run, and compared with spikeport's
float simulator at every step. nir is imported lazily: the rest of spikeport works without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from spikeport.errors import BadInput, CheckFailed
from spikeport.ir.graph import Graph
from spikeport.quantize.profiles import Profile
from spikeport.sim import Simulator
from spikeport.targets import Target, register_target
from spikeport.targets.compare import check_equal, check_in_batches
from spikeport.targets.nir.build import NAMES_METADATA, NIR_OPS, nir_names, to_nir

TEMPLATES = Path(__file__).resolve().parent / "templates"
BATCH = 256
OUTPUT_RTOL = 1e-9  # outputs are float sums in another order: equal to rounding, not bitwise

NOTES = [
    "NIR does not encode the discrete reset rule nor the initial potential: model.nir records "
    "them in metadata (reset by subtraction, v >= v_threshold, v starts at 0.5 * "
    "v_threshold); a consumer that resets to v_reset or starts at 0 runs another network.",
    "snnTorch imports IF as a leaky neuron (beta 0.9), starts at 0 and fires at v > threshold: "
    "see README.md for the settings to change "
    "(spikeport.targets.nir.snntorch_run applies them).",
]
MAXPOOL_NOTE = (
    "Max pooling is written as IF comparator nodes with recurrent Conv2d edges: a consumer "
    "must deliver a recurrent edge one step late (nirtorch: pass the returned state back)."
)


def _check(graph: Graph) -> None:
    """Build the NIR graph (no file) when nir is installed: refuses what cannot map, by name."""
    if importlib.util.find_spec("nir") is not None:
        to_nir(graph)


PROFILE = Profile(
    "nir",
    mult_bits=16,  # its consumers run adds in float32: products stay exact (no widening)
    signed_spikes=False,
    max_spike_bits=1,
    spike_bits_why="NIR's IF node emits 0/1 spikes; it has no multi-threshold neuron",
    ops=frozenset(NIR_OPS),
    check=_check,
)


def _needs(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"{what} needs the Python package '{module}': pip install {module}")


def emit(graph: Graph, outdir: Path) -> dict[str, Any]:
    """model.nir and README.md."""
    _needs("nir", "the nir target")
    import nir

    ng = to_nir(graph)
    nir.write(str(outdir / "model.nir"), ng)
    renamed = ng.metadata.get(NAMES_METADATA, {})
    readme = Template((TEMPLATES / "README.md.tmpl").read_text()).substitute(
        nodes="\n".join(
            f"| {k}{f' (spikeport: `{renamed[k]}`)' if k in renamed else ''} | {type(v).__name__} |"
            for k, v in ng.nodes.items()
        ),
        fixes="\n".join(f"{i + 1}. {fix}" for i, fix in enumerate(_fixes())),
        unfixable="\n".join(f"- {u}" for u in _unfixable()),
    )
    (outdir / "README.md").write_text(readme)
    pooled = any(n.op == "maxpool2d" for n in graph.nodes)
    notes = NOTES + ([MAXPOOL_NOTE] if pooled else [])
    return {"nodes": len(ng.nodes), "edges": len(ng.edges), "notes": notes}


def _fixes() -> tuple[str, ...]:
    from spikeport.targets.nir.snntorch_run import CONSUMER_FIXES

    return CONSUMER_FIXES


def _unfixable() -> tuple[str, ...]:
    from spikeport.targets.nir.snntorch_run import UNFIXABLE

    return UNFIXABLE


def reference_float(
    graph: Graph, x: np.ndarray, T: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The float simulator: spikes 0/1 per neuron node (T, N, size), keyed by the node's NIR
    name (nir_names), and the outputs summed (T, N, out)."""
    res = Simulator(graph, "float").run(x, T, record=True)
    assert res.trace is not None
    names = nir_names(graph)
    spikes = {
        names[n.name]: (res.trace[n.output] != 0).astype(np.int64).reshape(T, len(x), -1)
        for n in graph.nodes
        if n.op == "if"
    }
    return spikes, res.outputs[graph.outputs[0]].reshape(T, len(x), -1)


def check_batch(graph: Graph, run: Any, x: np.ndarray, T: int, first: int = 0) -> None:
    ref_spikes, ref_out = reference_float(graph, x, T)
    got_spikes, got_out = run.run(x, T)
    got = {k: v.astype(np.int64) for k, v in got_spikes.items()}
    check_equal("snnTorch (NIR)", ref_spikes, ref_out * 0, got, got_out * 0, first)
    scale = np.abs(ref_out).max(initial=0) + 1e-30
    bad = np.argwhere(np.abs(got_out - ref_out) > OUTPUT_RTOL * scale)
    if len(bad):
        t, k, i = bad[0]
        raise CheckFailed(
            f"snnTorch (NIR) output {i} differs from the float simulator at step {t + 1}, sample "
            f"{first + k}: {got_out[t, k, i]!r} vs {ref_out[t, k, i]!r}"
        )


def verify(
    graph: Graph,
    outdir: Path,
    x: np.ndarray,
    T: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read model.nir back, run it in snnTorch (float64), compare with the float simulator."""
    for module in ("nir", "snntorch", "nirtorch"):
        _needs(module, "verify --target nir")
    from spikeport.targets.nir.snntorch_run import SnnTorchRun

    run = SnnTorchRun(outdir / "model.nir")
    n = check_in_batches(
        x, BATCH, lambda chunk, first: check_batch(graph, run, chunk, T, first), progress
    )
    runner = (
        "snnTorch float64 from model.nir vs the float simulator: spikes identical, outputs "
        f"within {OUTPUT_RTOL:g} relative"
    )
    # Float against float: the spikes are identical, the outputs equal to rounding only.
    return {"samples": n, "timesteps": T, "runner": runner, "match": "equal spikes"}


TARGET = register_target(
    Target("nir", PROFILE, emit, verify, "NIR graph (nir 1.0.x), round trip through snnTorch")
)
