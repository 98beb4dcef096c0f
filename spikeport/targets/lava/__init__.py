"""Lava / Loihi 2 target: network.h5 (lava-dl netx layout) and run_lava.py (Lava processes,
Loihi2SimCfg fixed_pt), verified bit for bit by running run_lava.py in Lava's own fixed-point
CPU model (lava-nc 0.10.0 in a virtual environment of its own, .venv-lava; `make lava-venv`).

Lava's LIF resets to zero, fires on v > vth and sits behind Dense layers that add a step of
delay: the graph must be quantized with --target lava, which gives it that neuron kind
(spikeport.sim.kinds "lava"); the subtractive-reset network does not run on Lava.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from spikeport.errors import BadInput, CheckFailed, SpikeportError
from spikeport.ir.graph import Graph
from spikeport.quantize.profiles import Profile
from spikeport.sim.kinds import LAVA, SDN
from spikeport.targets import Target, register_target
from spikeport.targets.compare import check_equal, check_in_batches
from spikeport.targets.lava import capabilities as cap
from spikeport.targets.lava.plan import LAVA_OPS, SDN_OPS, Network, prepare
from spikeport.targets.lava.reference import reference

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPO = Path(__file__).resolve().parents[3]
LAVA_VENV = ".venv-lava"
BATCH = 64  # inputs per Lava run (one process network, reset between inputs)
RUN_TIMEOUT_S = 1800


class LavaUnavailable(SpikeportError):
    """Lava's runtime (the .venv-lava interpreter) is missing or broken: verify cannot run."""


def _check(graph: Graph) -> None:
    """The profile's own check: the layer chain must build and fit (on integer graphs)."""
    if graph.stage == "int":
        prepare(graph)


_LIF = Profile(
    "lava",
    weight_bits=cap.WEIGHT_BITS,
    bias_bits=32,  # the first layer's bias is host-side; Dense-fed biases: 13 bits (plan.check)
    state_bits=cap.STATE_BITS,
    input_bits=8,
    mult_bits=16,
    signed_spikes=False,
    max_spike_bits=1,
    spike_bits_why=(
        "Lava's LIF spikes are binary; its graded processes send a value, not a count of "
        "thresholds: GradedVec and GradedReluVec send the potential and zero it, SigmaDelta the "
        "whole change once it passes vth; none emits clamp(floor(v / theta), 0, K) and keeps "
        "v - k * theta, so none runs this neuron bit for bit (Lava's graded messages serve "
        "the sigma-delta kind, which quantize --target lava picks by itself)"
    ),
    ops=frozenset(LAVA_OPS),
    neuron_kind=LAVA,
    max_current=(1 << (cap.A_IN_BITS - 1)) - 1,
    layer_threshold=True,
    check=_check,
)
# Sigma-delta neurons (SigmaDelta behind graded Dense, spikeport.sim.kinds "sdn"): 24-bit
# state, one delta threshold a layer (per-channel weight scales are free: the threshold is not
# a balanced one). quantize --target lava tries both kinds and keeps the more accurate.
_SDN = dataclasses.replace(
    _LIF,
    neuron_kind=SDN,
    ops=frozenset(SDN_OPS),
    fold_add=True,  # an add is synapses into the next layer: shift 0, composed int8 weights
    state_bits=cap.SDN_STATE_BITS,
    max_current=cap.SDN_A_IN_LIMIT,
    neuron_bias_bits=cap.SDN_BIAS_BITS,  # SigmaDelta's bias (and a pair's cap), a mantissa
    layer_threshold=False,
)
PROFILE = dataclasses.replace(_LIF, kind_profiles=(_SDN,))


def lava_python() -> Path:
    """The interpreter of Lava's environment: .venv-lava in the working directory or in the
    spikeport checkout; LavaUnavailable naming what to run when there is none."""
    for root in (Path.cwd(), REPO):
        py = root / LAVA_VENV / "bin" / "python"
        if py.is_file():
            return py
    raise LavaUnavailable(
        f"Lava's runtime is not installed: no {LAVA_VENV}/bin/python here or in {REPO}; "
        "run `make lava-venv` (lava-nc 0.10.0 in a venv of its own)"
    )


def _readme(graph: Graph, net: Network) -> str:
    rows = [
        "| # | layer | spikeport node | neurons | vth | fed by |",
        "|---|---|---|---:|---:|---|",
    ]
    for i, la in enumerate(net.layers):
        fed = "host: W x + b into a_in" if la.src is None else f"Dense from layer {i - 1}"
        if net.levels:
            fed += f"; state_exp {la.state_exp}"
        rows.append(f"| {i} | {la.role} | {la.name} | {la.size} | {la.vth} | {fed} |")
    template = "README_sdn.md.tmpl" if net.levels else "README.md.tmpl"
    return Template((TEMPLATES / template).read_text()).substitute(
        layers="\n".join(rows),
        depth=len(net.layers),
        max_t=graph.meta["quantization"]["max_timesteps"],
        output_scale=float(np.asarray(graph.scales[graph.outputs[0]]).reshape(-1)[0]),
    )


def emit(graph: Graph, outdir: Path) -> dict[str, Any]:
    """network.h5, run_lava.py and README.md (check_fits has run the profile check)."""
    if importlib.util.find_spec("h5py") is None:
        raise BadInput(
            "the lava target writes HDF5 with the Python package 'h5py': pip install h5py"
        )
    from spikeport.targets.lava import hdf5

    net = prepare(graph)
    extra = {
        "input_scale": np.asarray(graph.scales[graph.input.name], np.float64),
        "output_scale": np.asarray(graph.scales[graph.outputs[0]], np.float64),
        "input_shape": list(graph.input.shape),
        "max_timesteps": graph.meta["quantization"]["max_timesteps"],
        "neuron_kind": SDN if net.levels else LAVA,
        "source": graph.meta.get("source", {}),
    }
    hdf5.write(outdir / "network.h5", net, extra)
    script = "run_lava_sdn.py" if net.levels else "run_lava.py"
    shutil.copyfile(TEMPLATES / script, outdir / "run_lava.py")
    (outdir / "README.md").write_text(_readme(graph, net))
    return {
        "layers": len(net.layers),
        "neurons": int(sum(la.size for la in net.layers)),
        "synapses": int(sum(np.count_nonzero(la.weight) for la in net.layers[1:])),
        "notes": _notes(net),
    }


def _notes(net: Network) -> list[str]:
    if net.levels:
        return [
            "sigma-delta network (neuron kind 'sdn'): SigmaDelta (ReLU) behind graded Dense "
            "connections; max pooling is a tournament of SigmaDelta layers, a step a round",
            "network.h5 uses netx's SDNN neuron type with spikeport's own fields (stateExp, "
            "actMode); it was not loaded through netx (lava-dl does not install here)",
        ]
    return [
        "Lava's LIF resets to zero, fires on v > vth, and each Dense adds a step: this is "
        "the network of neuron kind 'lava', not the subtractive-reset one",
        "netx ignores neuron/vInit: run_lava.py sets each LIF's start v, netx's Network "
        "would start at 0",
    ]


@contextlib.contextmanager
def _on_one_core() -> Iterator[None]:
    """The calling thread, and so every process it starts meanwhile, on the core it runs on
    (Linux; elsewhere nothing). Lava runs a network in several processes that wait on one
    another busily: spread over two cores they ran digits_mlp's sigma-delta check in 25 s,
    on one in 19 s, and left the other core to whatever else runs (beside one, the test
    suite's other worker had run at half speed). The thread only waits meanwhile; its own
    cores come back after. (Not preexec_fn: unsafe beside torch's threads.) Where the
    affinity cannot be set (a sandbox that forbids it), Lava runs as before: only its speed
    depends on this, not what it computes."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:  # field 39 of /proc/thread-self/stat: the CPU this thread last ran on
        cpu = int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        cpu = min(before)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_lava(outdir: Path, codes: np.ndarray, T: int) -> dict[str, np.ndarray]:
    """Run outdir/run_lava.py in Lava's environment on int8 input codes (N, inputs)."""
    py = lava_python()
    with tempfile.TemporaryDirectory(prefix="spikeport-lava-") as tmp:
        src, dst = Path(tmp) / "codes.npz", Path(tmp) / "run.npz"
        np.savez(src, codes=codes.reshape(len(codes), -1).astype(np.int64))
        cmd = [str(py), str(outdir / "run_lava.py"), "--codes", str(src), "-T", str(T)]
        try:
            with _on_one_core():
                proc = subprocess.run(
                    [*cmd, "--out", str(dst)],
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_S,
                )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LavaUnavailable(f"Lava's runtime {py} did not run: {e}") from None
        if proc.returncode != 0 or not dst.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise LavaUnavailable(
                f"Lava's runtime {py} failed on {outdir / 'run_lava.py'} "
                f"(exit {proc.returncode}): {last}"
            )
        with np.load(dst) as z:
            return {k: z[k] for k in z.files}


def check_batch(graph: Graph, outdir: Path, x: np.ndarray, T: int, first: int = 0) -> None:
    """Lava's run of x equals the simulator's at every step: every layer's spikes (each LIF's
    own s_out; kind "sdn": each SigmaDelta's graded s_out) and the output accumulator (the
    output LIF's v / 64, which must divide; kind "sdn": t times the output act at step t)."""
    codes, ref_spikes, ref_acc = reference(graph, x, T)
    got = run_lava(outdir, codes, T)
    if "act_out" in got:  # the sigma-delta script: layers by name, pool rounds not compared
        layers = prepare(graph).layers[:-1]
        got_spikes = {
            la.name: got[f"spikes_{i}"] for i, la in enumerate(layers) if la.name in ref_spikes
        }
        steps = np.arange(1, T + 1).reshape(-1, 1, 1)
        check_equal(
            "Lava (fixed_pt)", ref_spikes, ref_acc, got_spikes, got["act_out"] * steps, first
        )
        return
    names = list(ref_spikes)
    got_spikes = {name: got[f"spikes_{i}"].astype(np.int64) for i, name in enumerate(names)}
    v = got["v_out"]
    if np.any(v % (1 << cap.ACT_SHIFT)):
        raise CheckFailed(f"Lava's output v is not a multiple of {1 << cap.ACT_SHIFT}")
    check_equal("Lava (fixed_pt)", ref_spikes, ref_acc, got_spikes, v >> cap.ACT_SHIFT, first)


def verify(
    graph: Graph,
    outdir: Path,
    x: np.ndarray,
    T: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the emitted network in Lava (fixed_pt), compare every step with the simulator."""
    lava_python()  # say at once, before any work, when Lava's runtime is missing
    n = check_in_batches(
        x, BATCH, lambda chunk, first: check_batch(graph, outdir, chunk, T, first), progress
    )
    runner = "lava-nc 0.10.0, Loihi2SimCfg(select_tag='fixed_pt'), run_lava.py"
    return {"samples": n, "timesteps": T, "runner": runner}


DESCRIPTION = "Lava / Loihi 2: netx HDF5 + Lava script, verified in Lava's fixed-point model"
TARGET = register_target(Target("lava", PROFILE, emit, verify, DESCRIPTION))
LIF_PROFILE, SDN_PROFILE = _LIF, _SDN  # each kind's own limits (PROFILE tries both)
__all__ = [
    "LIF_PROFILE",
    "PROFILE",
    "SDN_PROFILE",
    "TARGET",
    "LavaUnavailable",
    "check_batch",
    "lava_python",
    "run_lava",
]
