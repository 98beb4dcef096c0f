"""IR: Graph, Node, op vocabulary with shape rules, .spk save/load."""

from spikeport.ir.artifact import FORMAT_VERSION, load, save
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import OPS, OpSpec, ShapeMismatch

__all__ = [
    "FORMAT_VERSION",
    "Graph",
    "Node",
    "OPS",
    "OpSpec",
    "ShapeMismatch",
    "TensorInfo",
    "check_graph",
    "load",
    "save",
]
