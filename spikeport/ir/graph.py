"""The one intermediate representation every stage reads and writes.

A `Graph` is a list of single-output `Node`s in topological order over named tensors.
Shapes are per sample: the batch axis is always dynamic and never stored.

Stages (`Graph.stage`):
  "ann"  float network as imported (Relu nodes, no neurons yet)
  "snn"  float spiking network (IF neurons with balanced thresholds)
  "int"  integer spiking network: every node also carries its `*_q` integer params and
         every tensor a real-valued `scale` (real value = scale * integer value)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikeport.errors import FormatError

STAGES = ("ann", "snn", "int")


@dataclass
class TensorInfo:
    """A named tensor: per-sample shape (no batch axis) and element type."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if any(d <= 0 for d in self.shape):
            raise FormatError(f"tensor '{self.name}': shape {self.shape} has a non-positive axis")


@dataclass
class Node:
    """One operation: `op` (a key of spikeport.ir.ops.OPS) applied to `inputs`, giving `output`."""

    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    """A network: graph inputs, nodes in topological order, graph outputs, tensor metadata."""

    inputs: list[TensorInfo]
    nodes: list[Node]
    outputs: list[str]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    stage: str = "ann"
    meta: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, np.ndarray] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        """The node that writes `tensor`, or None for a graph input."""
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape

    @property
    def input(self) -> TensorInfo:
        """The single graph input (every current import produces exactly one)."""
        return self.inputs[0]
