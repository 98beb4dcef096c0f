"""Shared fixtures: the two shipped digits examples and the generated fixture models, each
imported, converted and quantized once per session."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fixture_models import FIXTURES

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.convert.balance import threshold_shape
from spikeport.convert.tune import product_axis
from spikeport.ir import save
from spikeport.ir.graph import Graph
from spikeport.quantize import get_profile, quantize

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker on a core of its own, with every process it starts. Lava's
    runtime runs each network in several processes that wait on one another busily: left to
    the scheduler they took both cores and halved the other worker's speed (its
    test_quantize_ranges: 75 s alone, 152 s beside one Lava test); pinned to one core the
    Lava test itself ran faster too (19 s against 25 s). So do onnxruntime's and torch's
    pools, which size themselves by the usable cores."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and int(workers) <= len(cpus):  # more workers than cores: left to the scheduler
        with contextlib.suppress(OSError):  # a sandbox that forbids it: only speed is lost
            os.sched_setaffinity(0, {cpus[int(worker[2:])]})


@dataclass
class Case:
    """A model with its files and its converted (snn) and quantized (int) graphs."""

    name: str
    onnx: Path
    calib: Path
    test_x: np.ndarray
    snn: Graph
    int: Graph


def _case(name: str, onnx_path: Path, calib: Path, test_x: np.ndarray, signed: bool) -> Case:
    snn = convert(onnx_path, calib, signed=signed)
    calib_x = np.load(calib)["x"]
    return Case(name, onnx_path, calib, test_x, snn, quantize(snn, calib_x, get_profile("sim")))


def cli_emit_verify(
    graph: Graph, target: str, tmp_path: Path, data: Path, n: int, T: int | None = None
) -> tuple[str, str]:
    """`emit --target` then `verify` through the CLI (each must exit 0): their outputs."""
    spk, out = tmp_path / "m.spk", tmp_path / "o"
    save(graph, spk)
    runner = CliRunner()
    emitted = runner.invoke(main, ["emit", str(spk), "--target", target, "-o", str(out)])
    assert emitted.exit_code == 0, emitted.output
    args = ["verify", str(spk), str(out), "--data", str(data), "-n", str(n)]
    verified = runner.invoke(main, args + (["-T", str(T)] if T else []))
    assert verified.exit_code == 0, verified.output
    return emitted.output, verified.output


def unsigned_snn(case: Case) -> Graph:
    """The case's float SNN without signed spikes (targets that have none: SpiNNaker2, NIR)."""
    if not any(n.attrs.get("signed") for n in case.snn.nodes if n.op == "if"):
        return case.snn
    return convert(case.onnx, case.calib, signed=False)


# Model cases: the shipped examples, and the generated fixtures (wide_mlp with signed spikes).
CASE_NAMES = ["digits_cnn", "digits_mlp", *FIXTURES]


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    out: dict[str, Case] = {}
    test_x = np.load(EXAMPLES / "digits_test.npz")["x"]
    for name in ("digits_cnn", "digits_mlp"):
        out[name] = _case(
            name, EXAMPLES / f"{name}.onnx", EXAMPLES / "digits_calib.npz", test_x, signed=False
        )
    root = tmp_path_factory.mktemp("fixtures")
    for name, build in FIXTURES.items():
        model, x = build()
        onnx.save(model, root / f"{name}.onnx")
        np.savez(root / f"{name}_calib.npz", x=x[:48])
        out[name] = _case(
            name,
            root / f"{name}.onnx",
            root / f"{name}_calib.npz",
            x[48:],
            signed=(name == "wide_mlp"),
        )
    return out


@pytest.fixture(params=CASE_NAMES)
def case(request: pytest.FixtureRequest, cases: dict[str, Case]) -> Case:
    return cases[request.param]


@pytest.fixture(scope="module")
def lava_env():  # noqa: ANN201
    """Lava's interpreter, or a skip (locally) / a failure (CI=true) saying why there is none."""
    from spikeport.targets.lava import LavaUnavailable, lava_python

    try:
        return lava_python()
    except LavaUnavailable as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run Lava: {e}")
        pytest.skip(str(e))


def lava_with_a_changed_weight(outdir: Path, dest: Path, layer: int) -> Path:
    """A copy of an emitted Lava network whose `layer` weights are off by one where nonzero:
    verify must catch it."""
    import h5py

    dest.mkdir()
    for f in outdir.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    with h5py.File(dest / "network.h5", "r+") as f:
        w = f[f"layer/{layer}/weight"][()]
        del f[f"layer/{layer}/weight"]
        f[f"layer/{layer}/weight"] = np.clip(w.astype(np.int64) + (w != 0), -127, 127)
    return dest


def per_index_products(snn: Graph, seed: int = 0) -> Graph:
    """`snn` with one threshold per contracted index (0.2 to 1.5 times its own) on every
    bipolar neuron that feeds products of two activations, as T-aware conversion gives them:
    the products then weigh their contracted indices by integer multipliers
    (quantize.seq._matmul)."""
    rng = np.random.default_rng(seed)
    for n in snn.nodes:
        axis = product_axis(snn, n)
        if axis is not None:
            shape = snn.shape(n.inputs[0])
            theta = np.max(n.params["threshold"]) * rng.uniform(0.2, 1.5, shape[axis])
            n.params["threshold"] = threshold_shape(theta, len(shape), axis).astype(np.float32)
    return snn
