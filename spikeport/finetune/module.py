"""A torch module built from a float spiking graph: the float mode of the reference simulator,
differentiable through time.

Direct encoding (the input is the same current at every step), nodes run in graph order once
per step, tensors that depend only on the input through stateless ops are computed once (as
the simulator does), and the output layer accumulates. `forward` returns the accumulated
output after every step, so one run to T also gives every shorter run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spikeport.batch import named
from spikeport.errors import BadInput
from spikeport.finetune.layers import make_layer
from spikeport.finetune.surrogate import get_surrogate
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph
from spikeport.ir.ops import static_tensors
from spikeport.sim.kinds import holds_levels

DEFAULT_SURROGATE = "rectangle"


@dataclass
class Run:
    """outputs: (T, N, ...) accumulated first graph output after steps 1..T;
    trace: tensor -> (T, N, ...) value at every step (only when recorded)."""

    outputs: torch.Tensor
    trace: dict[str, torch.Tensor] | None = None


class SpikingNet(nn.Module):
    """The float spiking network of `graph` (stage "snn") as torch layers, one per node."""

    def __init__(self, graph: Graph, surrogate: str = DEFAULT_SURROGATE):
        super().__init__()
        if graph.stage != "snn":
            raise BadInput(
                f"fine-tuning needs a converted float spiking graph (stage 'snn'), this one is "
                f"'{graph.stage}': "
                + (
                    "run `spikeport convert` first"
                    if graph.stage == "ann"
                    else "fine-tune the output of `spikeport convert`, then quantize"
                )
            )
        self.graph = graph
        shape = get_surrogate(surrogate)
        self.layers = nn.ModuleList(
            make_layer(n, graph.shape(n.output), shape) for n in graph.nodes
        )
        self.static = static_tensors(graph)
        self.levels_out = holds_levels(graph)

    def run(self, x: torch.Tensor | dict[str, torch.Tensor], T: int, record: bool = False) -> Run:
        """Simulate T steps of the batch `x` (N, *input shape), or {input name: batch}."""
        if T < 1:
            raise BadInput(f"-T must be at least 1, got {T}")
        for lay in self.layers:
            lay.reset()
        out_name = self.graph.outputs[0]
        values: dict[str, torch.Tensor] = named(self.graph.inputs, x)  # type: ignore[arg-type]
        acc: torch.Tensor | float = 0.0
        outs: list[torch.Tensor] = []
        trace: dict[str, list[torch.Tensor]] = {}
        for t in range(T):
            for node, lay in zip(self.graph.nodes, self.layers, strict=True):
                if t > 0 and node.output in self.static:
                    continue
                values[node.output] = lay(*[values[i] for i in node.inputs])
            # the simulator's accumulator: t * output_t where the graph carries levels (sdn)
            acc = values[out_name] * (t + 1) if self.levels_out else acc + values[out_name]
            outs.append(acc)
            if record:
                for name, v in values.items():
                    trace.setdefault(name, []).append(v)
        stacked = {k: torch.stack(v) for k, v in trace.items()} if record else None
        return Run(torch.stack(outs), stacked)

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor], T: int) -> torch.Tensor:
        """(T, N, classes): the accumulated output after each step t = 1..T."""
        return self.run(x, T).outputs

    def on_weight_grids(self, steps: dict[str, np.ndarray]) -> None:
        """Read the weights of these nodes rounded to their grids ({node name: step}, from
        spikeport.finetune.grid.weight_steps): quantization-aware fine-tuning."""
        for node, lay in zip(self.graph.nodes, self.layers, strict=True):
            if node.name in steps:
                lay.on_weight_grid(steps[node.name])

    def constrain(self) -> None:
        """Keep every param valid (thresholds > 0) after an optimiser step."""
        for lay in self.layers:
            lay.constrain()

    def to_graph(self) -> Graph:
        """A copy of the source graph with the trained float params written back."""
        out = copy.deepcopy(self.graph)
        for node, lay in zip(out.nodes, self.layers, strict=True):
            node.params.update(lay.export())
        return check_graph(out)
