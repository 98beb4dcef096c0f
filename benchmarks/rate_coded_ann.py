"""The rate-coded ANN of a T-step, 1-bit spiking network: what its levels allow, without spikes.

Fed a constant input x, an integrate-and-fire neuron (reset by subtraction, v0 = theta / 2)
fires round(x T / theta) times in T steps, clipped to [0, T] ([-T, T] for a bipolar one): the
quantization-clip-floor-shift activation of Bu et al. 2022 (QCFS), T + 1 levels (2T + 1 for a
bipolar neuron). A spiking network at T steps computes that function where its neurons' inputs
arrive evenly; elsewhere it differs (the same paper's unevenness error), for worse or, once
trained, for better: its neurons' counts then also depend on when their inputs came. Trained
with the same recipe from the same conversion, this ANN says whether fine-tuning at T misses a
bar for lack of levels (it misses too) or for the spikes' timing (it does not).

Used by `cnn_family.py --rate-coded`. The ANN is the fine-tuning module itself
(spikeport.finetune) at one step, with each IF neuron's layer swapped for RateCodedIF while
`rate_coded` is active: the same graph, parameters, loss, optimiser and schedule as `finetune`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch

from spikeport.data import Dataset
from spikeport.finetune import Settings, finetune, layers
from spikeport.finetune.layers import staircase
from spikeport.finetune.module import SpikingNet
from spikeport.finetune.surrogate import Shape
from spikeport.finetune.train import Teacher
from spikeport.ir.graph import Graph, Node


class RateCodedIF(layers.IF):
    """theta / T * clip(floor(x T / theta + 1/2), lo, T) in one step (lo = -T if bipolar, else
    0), written as the graded neuron's sum of steps one threshold theta / T apart, each with
    its surrogate gradient: the IF neuron's T-step count of a constant input."""

    def __init__(self, node: Node, surrogate: Shape, steps: int):
        super().__init__(node, surrogate)
        if self.levels > 1:
            raise ValueError(f"node '{node.name}': the rate-coded ANN is of 1-bit neurons")
        self.steps = steps

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        step = self.threshold / self.steps
        return staircase(step / 2 + current, step, self.steps, self.surrogate, self.bipolar) * step


@contextmanager
def rate_coded(steps: int) -> Iterator[None]:
    """While active, the fine-tuning module builds RateCodedIF(steps) for every IF node."""
    kept = layers.LAYERS["if"]
    layers.LAYERS["if"] = lambda node, shape, surrogate: RateCodedIF(node, surrogate, steps)
    try:
        yield
    finally:
        layers.LAYERS["if"] = kept


def trained(
    snn: Graph, train: Dataset, settings: Settings, teacher: Teacher
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`snn`'s rate-coded ANN of settings.T levels, trained with `settings` (run at one step)
    from the converted parameters: its class scores as a function of an input batch."""
    with rate_coded(settings.T):
        tuned = finetune(snn, train, replace(settings, T=1), quiet=True, teacher=teacher).graph
        net = SpikingNet(tuned).eval()  # (its layers are made here, while rate_coded holds)
    return lambda x: net(x, 1)[-1]
