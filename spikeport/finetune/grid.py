"""Quantization-aware fine-tuning: train through the integer weights quantize will give.

A float fine-tune learns corrections finer than the weight grid: on all-MiniLM-L6-v2 (1-bit,
T = 16) two epochs took the float network's sentence cosine from 0.9808 to 0.9858, but the
8-bit integer network only from 0.9790 to 0.9824 (12-bit weights kept 0.9856). So, as in
quantization-aware training (Jacob et al. 2018; TFLite's and Brevitas' QAT), the forward pass
reads each weight rounded to the grid quantize puts it on, and the gradient passes the
rounding straight through (Bengio et al. 2013).

The grid is read from a quantized copy of the graph, not re-derived: a weight w of a dense or
conv node becomes weight_q * s_out / s_in there (the output scale per row or channel, the
input scale per feature or channel, quantize's `scales`), so its step is s_out / s_in. Each
node's step is checked against its own weights (|w / step - weight_q| <= 1/2); a node whose
integers came another way (an add folded into its synapse, a clipped weight) keeps float
weights and is named. The steps stay fixed while training: the thresholds that set s_in move
by well under a percent in a fine-tune.
"""

from __future__ import annotations

import numpy as np
import torch

from spikeport.batch import Batch
from spikeport.ir.graph import Graph, Node
from spikeport.quantize.scales import channel_vector, feature_vector, input_channels

GRIDDED = ("dense", "conv2d")
ROUNDING_SLACK = 1e-6  # float64 division of values that were rounded from the same product


Steps = dict[str, np.ndarray]  # node name -> the step of each of its weights' grid


def weight_steps(graph: Graph, calib_x: Batch, target: str) -> tuple[Steps, list[str]]:
    """({node name: the step of each weight's integer grid}, the weighted nodes left in float)
    for float spiking `graph` quantized for `target` on `calib_x`."""
    from spikeport.quantize import get_profile, quantize

    # Rounded to nearest, so that each integer tells its weight's step (--weight-rounding
    # feedback moves some a step further; a weight trained on the grid has no error to pass
    # on, so quantize keeps its integer either way).
    q = quantize(graph, calib_x, get_profile(target), weight_rounding="nearest")
    steps: Steps = {}
    for node in q.nodes:
        if node.op in GRIDDED and "weight_q" in node.params:
            step = _step(q, node)
            if step is not None:
                steps[node.name] = step
    for name in q.meta["quantization"].get("outlier_inputs_split", []):
        _join_split(q, name, steps)
    weighted = [n.name for n in graph.nodes if n.op in GRIDDED and "weight" in n.params]
    return {k: v for k, v in steps.items() if k in weighted}, [
        k for k in weighted if k not in steps
    ]


def _step(q: Graph, node: Node) -> np.ndarray | None:
    """s_out / s_in in the weight's shape, None where it does not reproduce weight_q."""
    x_shape, y_shape = q.shape(node.inputs[0]), q.shape(node.output)
    if node.op == "dense":
        s_in = feature_vector(q.scales[node.inputs[0]], x_shape)
        s_out = feature_vector(q.scales[node.output], y_shape)
        if s_in is None or s_out is None:
            return None
        step = s_out[:, None] / s_in[None, :]
    else:
        s_in = channel_vector(q.scales[node.inputs[0]], x_shape)
        s_out = channel_vector(q.scales[node.output], y_shape)
        if s_in is None or s_out is None:
            return None
        w_shape = node.params["weight"].shape
        cin = input_channels(w_shape, node.attrs["group"])
        step = (s_out[:, None] / s_in[cin])[:, :, None, None] * np.ones(w_shape[2:])
    w, w_q = node.params["weight"].astype(np.float64), node.params["weight_q"].astype(np.float64)
    if step.shape != w.shape or np.abs(w / step - w_q).max(initial=0) > 0.5 + ROUNDING_SLACK:
        return None
    return step


def _join_split(q: Graph, name: str, steps: Steps) -> None:
    """A dense layer quantize split (quantize.outliers): its outlier columns take the side
    layer's steps; the layer stays float if either part has none."""
    side = steps.pop(f"{name}:outliers", None)
    main = steps.get(name)
    if main is None or side is None:
        steps.pop(name, None)
        return
    main[:, q.node(f"{name}:outlier_inputs").attrs["indices"]] = side


def on_grid(w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """`w` rounded to multiples of `step` in the forward pass, unchanged in the backward one
    (the straight-through estimator)."""
    return w + (torch.round(w / step) * step - w).detach()
