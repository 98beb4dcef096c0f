"""Fuzzing the readers (issue 19): hypothesis mutates a valid .spk's graph.json (any value at
any place replaced by any JSON value), its arrays, data files, and ONNX bytes. Whatever comes
in, the outcome is a result or a SpikeportError (one line, exit 2), never another exception;
a .spk that loads also runs a step of the simulator (later stages trust what load accepted)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.data import load_data
from spikeport.errors import SpikeportError
from spikeport.ir import load, save
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator

EX = Path(__file__).resolve().parent.parent / "examples"
CALIB = EX / "digits_calib.npz"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


class _Quiet(tuple):
    """The fixture's value, with a short repr in hypothesis' reports."""

    def __repr__(self) -> str:
        return "<graph.json, tensors.npz, x>"


@pytest.fixture(scope="module")
def spk(tmp_path_factory) -> tuple[dict[str, Any], bytes, np.ndarray]:
    snn = convert(EX / "digits_cnn.onnx", CALIB)
    x = np.load(CALIB)["x"]
    path = tmp_path_factory.mktemp("fuzz") / "m.spk"
    save(quantize(snn, x, get_profile("sim")), path)
    with zipfile.ZipFile(path) as z:
        return _Quiet((json.loads(z.read("graph.json")), z.read("tensors.npz"), x[:2]))


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document (dict keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _replace(doc[path[0]], path[1:], value)
    return doc


def _loads_or_refuses(path: Path, x: np.ndarray) -> None:
    try:
        g = load(path)
    except SpikeportError:
        return
    try:
        Simulator(g, "int" if g.stage == "int" else "float").run(x, 1)
    except SpikeportError:
        pass


@FUZZ
@given(data=st.data(), value=json_values)
def test_any_graph_json_value_anywhere_loads_or_is_refused(spk, tmp_path, data, value):
    doc, npz, x = spk
    doc = json.loads(json.dumps(doc))
    where = data.draw(st.sampled_from(_paths(doc)))
    doc = _replace(doc, where, value)
    path = tmp_path / "f.spk"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("graph.json", json.dumps(doc))
        z.writestr("tensors.npz", npz)
    _loads_or_refuses(path, x)


@FUZZ
@given(data=st.data())
def test_any_array_change_loads_or_is_refused(spk, tmp_path, data):
    doc, npz, x = spk
    with np.load(io.BytesIO(npz)) as z:
        arrays = {k: z[k] for k in z.files}
    key = data.draw(st.sampled_from(sorted(arrays)))
    kind = data.draw(st.sampled_from(["scale", "nan", "dtype", "shape", "drop"]))
    a = arrays[key]
    if kind == "scale":
        with np.errstate(all="ignore"):
            arrays[key] = (a * data.draw(st.sampled_from([0, -1, 1e30]))).astype(a.dtype)
    elif kind == "nan" and a.dtype.kind == "f":
        arrays[key] = np.full_like(a, np.nan)
    elif kind == "dtype":
        arrays[key] = a.astype(data.draw(st.sampled_from(["int8", "float64", "uint8", "bool"])))
    elif kind == "shape":
        arrays[key] = a.reshape(-1)
    else:
        del arrays[key]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = tmp_path / "f.spk"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("graph.json", json.dumps(doc))
        z.writestr("tensors.npz", buf.getvalue())
    _loads_or_refuses(path, x)


@FUZZ
@given(
    cut=st.integers(0, 10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)
def test_any_byte_damage_loads_or_is_refused(spk, tmp_path, cut, flips):
    doc, npz, x = spk
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("graph.json", json.dumps(doc))
        z.writestr("tensors.npz", npz)
    raw = bytearray(buf.getvalue())
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    path = tmp_path / "f.spk"
    path.write_bytes(bytes(raw[: len(raw) - cut % 64]))
    _loads_or_refuses(path, x)


dtypes = st.sampled_from(
    ["float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64"]
)


@FUZZ
@given(
    dtype=dtypes,
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
    key=st.sampled_from(["x", "X", "y"]),
    special=st.sampled_from([None, np.nan, np.inf, -1e39]),
)
def test_any_data_file_loads_or_is_refused(tmp_path, dtype, shape, key, special):
    a = np.zeros(shape, dtype=dtype)
    if special is not None and a.size and a.dtype.kind in "fc":
        with np.errstate(over="ignore"):
            a.flat[0] = special
    np.savez(tmp_path / "d.npz", **{key: a})
    from spikeport.ir.graph import TensorInfo

    try:
        load_data(tmp_path / "d.npz", [TensorInfo("x", (1, 8, 8))], labels=True, n_classes=10)
    except SpikeportError:
        pass


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3)
)
def test_damaged_onnx_gives_exit_0_or_2(tmp_path, flips):
    raw = bytearray((EX / "digits_mlp.onnx").read_bytes())
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    (tmp_path / "m.onnx").write_bytes(bytes(raw))
    res = CliRunner().invoke(
        main,
        [
            "convert",
            str(tmp_path / "m.onnx"),
            "--calib",
            str(CALIB),
            "-o",
            str(tmp_path / "o.spk"),
            "-q",
        ],
    )
    assert res.exit_code in (0, 2), res.stderr
    assert res.exit_code == 0 or res.stderr.count("\n") == 1
