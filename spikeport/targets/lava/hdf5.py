"""network.h5 in lava-dl netx's layout (the Loihi 2 deployment format), plus what netx has no
field for under /spikeport.

What netx reads (lava-dl src/lava/lib/dl/netx/hdf5.py and utils.py, NetDict):
  /layer/<i>/type      ascii bytes: "input" | "dense" ("conv", "flatten" ... are not written)
  /layer/<i>/shape     array; netx reverses it (WHC); we write 1-D shapes (conv unrolled)
  /layer/<i>/weight    integers (out, in), read with .astype(int); netx picks the Dense's
                       num_weight_bits / weight_exp itself (optimize_weight_bits), exactly
  /layer/<i>/bias      integers, given to the LIF as bias_mant with bias_exp 6
  /layer/<i>/neuron/   type "CUBA" -> LIF: vth = vThMant, du = iDecay - 1, dv = vDecay
Extensions netx does not read: neuron/vInit (the LIF's starting v, in a_in units), /layer/<i>/
name (the spikeport node), and /spikeport (the host-side first layer, scales, provenance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spikeport.targets.lava import capabilities as cap
from spikeport.targets.lava.plan import Layer, Network

FORMAT = "spikeport-lava/1"
PACK = {"compression": "gzip", "shuffle": True}  # unrolled convolutions are mostly zeros
# The fields of netx's layout this file uses, by layer type: tests check the file against it.
NETX_FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("type", "shape", "neuron"),
    "dense": ("type", "shape", "weight", "bias", "neuron"),
}
NEURON_FIELDS = ("type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike")
# Kind "sdn": netx's SDNN neuron type (Sigma / SigmaDelta); vThMant is the mantissa Lava shifts
# left by stateExp, actMode "relu" (the output layer: "unit"). Not loaded through netx here
# (lava-dl does not install): run_lava_sdn.py reads these fields.
SDN_NEURON_FIELDS = ("type", "vThMant", "stateExp", "spikeExp", "actMode", "cumError")


def _text(group: Any, key: str, value: str) -> None:
    group.create_dataset(key, data=np.bytes_(value))  # NetDict decodes ascii bytes


def _neuron(group: Any, vth: int, v0: np.ndarray) -> None:
    n = group.create_group("neuron")
    _text(n, "type", "CUBA")
    n.create_dataset("iDecay", data=np.int64(cap.DU + 1))  # netx: du = iDecay - 1
    n.create_dataset("vDecay", data=np.int64(cap.DV))
    n.create_dataset("vThMant", data=np.int64(vth))
    n.create_dataset("refDelay", data=np.int64(1))
    n.create_dataset("gradedSpike", data=np.bool_(False))
    n.create_dataset("vInit", data=np.asarray(v0, np.int64))


def _sdn_neuron(group: Any, vth: int, exp: int, unit: bool) -> None:
    n = group.create_group("neuron")
    _text(n, "type", "SDNN")
    n.create_dataset("vThMant", data=np.int64(vth >> exp))
    n.create_dataset("stateExp", data=np.int64(exp))
    n.create_dataset("spikeExp", data=np.int64(0))
    _text(n, "actMode", "unit" if unit else "relu")
    n.create_dataset("cumError", data=np.bool_(False))
    n.create_dataset("gradedSpike", data=np.bool_(True))


def _sdn_sources(group: Any, net: Network, la: Layer) -> None:
    """Kind "sdn" layers form a DAG, which netx's chain cannot say: /layer/<i>/src is the
    index of the layer `weight` reads (-1: the host, which sends input_weight @ codes +
    input_bias at the first step), /layer/<i>/extra/<k>/{src, weight} each further graded
    Dense into the same SigmaDelta."""
    index = {x.name: i for i, x in enumerate(net.layers)}
    group.create_dataset("src", data=np.int64(-1 if la.src is None else index[la.src]))
    if la.src is None:
        group.create_dataset("input_weight", data=la.weight.astype(np.int64), **PACK)
        group.create_dataset("input_bias", data=la.bias.astype(np.int64))
    ex = group.create_group("extra")
    for k, (src, w) in enumerate(la.extra):
        e = ex.create_group(str(k))
        e.create_dataset("src", data=np.int64(index[src]))
        e.create_dataset("weight", data=w.astype(np.int8), **PACK)


def write(path: Path, net: Network, extra: dict[str, Any]) -> None:
    """Write the network; `extra` (scales, source) goes into /spikeport as JSON and arrays."""
    import h5py

    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        for i, la in enumerate(net.layers):
            g = layers.create_group(str(i))
            _text(g, "type", "input" if la.src is None else "dense")
            _text(g, "name", la.name)
            g.create_dataset("shape", data=np.array([la.size], np.int64))
            if la.src is not None:
                g.create_dataset("weight", data=la.weight.astype(np.int8), **PACK)  # plan.check
            if la.src is not None or la.offset is not None:  # the population's own bias
                g.create_dataset("bias", data=la.neuron_bias().astype(np.int32))
            if net.levels:
                _sdn_neuron(g, la.vth, la.state_exp, la.role == "output")
                _sdn_sources(g, net, la)
            else:
                _neuron(g, la.vth, la.v0)
        sp = f.create_group("spikeport")
        first = net.layers[0]
        sp.create_dataset("input_weight", data=first.weight.astype(np.int64), **PACK)
        sp.create_dataset("input_bias", data=first.bias.astype(np.int64))
        sp.create_dataset("roles", data=np.array([la.role for la in net.layers], "S"))
        for key, value in extra.items():
            if isinstance(value, np.ndarray):
                sp.create_dataset(key, data=value)
        meta = {k: v for k, v in extra.items() if not isinstance(v, np.ndarray)}
        _text(sp, "meta", json.dumps({"format": FORMAT, **meta}))
