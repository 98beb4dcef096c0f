"""NIR target: node names as real exporters write them (`/0/Conv`, `conv.weight`, a name that
starts with a digit, one that is NIR's own `input`) survive NIR's naming rules on emit and
verify: each becomes one consistent NIR name, and model.nir records the mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.ir import save
from spikeport.quantize import get_profile, quantize
from spikeport.targets.nir.build import NAMES_METADATA, nir_names

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("nirtorch")

EX = Path(__file__).resolve().parent.parent / "examples"
EXPORTER_NAMES = ["/0/Conv", "input", "/0/Relu", "conv.weight", "1x", "output", "a b/Gemm", "_"]


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    snn = convert(EX / "digits_cnn.onnx", EX / "digits_calib.npz", signed=False)
    for node, name in zip(snn.nodes, EXPORTER_NAMES, strict=False):
        node.name = name
    g = quantize(snn, np.load(EX / "digits_calib.npz")["x"], get_profile("nir"))
    path = tmp_path_factory.mktemp("names") / "m.spk"
    save(g, path)
    return g, path


def test_names_are_safe_unique_and_stable(renamed):
    g, _ = renamed
    names = nir_names(g)
    assert len(set(names.values())) == len(names)
    for new in names.values():
        assert new.replace("_", "a").isalnum() and not new[0].isdigit()
        assert new not in ("input", "output")
    assert names["/0/Conv"] == "_0_Conv" and names["conv.weight"] == "conv_weight"
    assert names == nir_names(g)  # emit and verify compute the same mapping


def test_emit_and_verify_take_exporter_names(renamed, tmp_path):
    g, spk = renamed
    out = tmp_path / "nir"
    runner = CliRunner()
    res = runner.invoke(main, ["emit", str(spk), "--target", "nir", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main, ["verify", str(spk), str(out), "--data", str(EX / "digits_test.npz"), "-n", "8"]
    )
    assert res.exit_code == 0, res.output
    read = nir.read(str(out / "model.nir"))
    mapping = read.metadata[NAMES_METADATA]
    assert mapping["_0_Conv"] == "/0/Conv" and mapping["n_input"] == "input"
    names = nir_names(g)
    mapped = {names[n.name] for n in g.nodes if n.op in ("conv2d", "dense", "if")}
    assert mapped <= set(read.nodes)
    assert "`/0/Conv`" in (out / "README.md").read_text()
