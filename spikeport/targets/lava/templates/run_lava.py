"""Run network.h5 (written by `spikeport emit --target lava`) in Lava's bit-accurate CPU model.

Needs lava-nc 0.10.0, numpy and h5py (not spikeport). Builds the network from Lava processes:
a RingBuffer that sends the first layer's input current, then per layer an LIF (and, from the
second layer on, a Dense in front of it), run with Loihi2SimCfg(select_tag="fixed_pt"); a small
process of our own (SpikeLog) records every layer's spikes, a Monitor the output layer's v.

    python run_lava.py --data test.npz -n 20 -T 8          # predictions (and accuracy with y)
    python run_lava.py --codes codes.npz -T 8 --out run.npz  # int8 input codes in, every
                                                             # layer's spikes and the output out

Every input runs T steps from the same start: between inputs the script sets every LIF's v
back to its start and empties every Dense's one-step buffer (a_buff).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIF
from lava.proc.monitor.process import Monitor

HERE = Path(__file__).resolve().parent
BITS = 16  # spikes recorded 16 to an int32 word: Var.get moves one element at a time
ACT_SHIFT = 6  # Lava shifts a_in and vth left by 6 bits; v counts in those units
# An int8 weight w goes to the Dense as 2 * w with weight_exp -1: mixed-sign 8-bit weights lose
# their least significant bit in Lava (truncate_weights), 2 * w loses nothing, and the shift
# brings the sum back to sum(w * s) exactly.
WEIGHT_SCALE, WEIGHT_EXP = 2, -1


class SpikeLog(AbstractProcess):
    """Records a layer's spikes at every step, packed BITS to a word (a sink of our own)."""

    def __init__(self, *, size: int, steps: int) -> None:
        super().__init__(size=size, steps=steps)
        self.a_in = InPort(shape=(size,))
        self.data = Var(shape=(-(-size // BITS), steps), init=0)


@implements(proc=SpikeLog, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeLogModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    data: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def run_spk(self) -> None:
        s = (self.a_in.recv() != 0).astype(np.int64)
        s = np.pad(s, (0, self.data.shape[0] * BITS - len(s))).reshape(-1, BITS)
        words = (s << np.arange(BITS)).sum(1)
        self.data[:, (self.time_step - 1) % self.data.shape[1]] = words


def unpack(words: np.ndarray, size: int) -> np.ndarray:
    """(words, steps) -> (steps, size) 0/1."""
    bits = (words.T[:, :, None].astype(np.int64) >> np.arange(BITS)) & 1
    return bits.reshape(len(bits), -1)[:, :size]


def read(path: Path) -> tuple[list[dict], dict]:
    """The layers of network.h5 (netx layout) and its /spikeport group."""
    with h5py.File(path, "r") as f:
        layers = []
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            la = {k: g[k][()] for k in ("shape", "weight", "bias") if k in g}
            la["name"] = g["name"][()].decode()
            la["neuron"] = {k: g["neuron"][k][()] for k in g["neuron"]}
            layers.append(la)
        sp = {k: f["spikeport"][k][()] for k in f["spikeport"]}
    sp["meta"] = json.loads(sp["meta"].decode())
    return layers, sp


class LavaNet:
    """The Lava processes of network.h5, with monitors on every layer; `run` feeds inputs."""

    def __init__(self, path: Path, first_current: np.ndarray, steps: int):
        self.layers, self.sp = read(path)
        self.source = RingBuffer(data=first_current.astype(np.int32).reshape(-1, 1))
        self.lifs, self.denses = [], []
        for i, la in enumerate(self.layers):
            nrn = la["neuron"]
            size = int(np.prod(la["shape"]))
            lif = LIF(
                shape=(size,),
                du=int(nrn["iDecay"]) - 1,  # netx's mapping of CUBA parameters
                dv=int(nrn["vDecay"]),
                vth=int(nrn["vThMant"]),
                bias_mant=la.get("bias", np.zeros(size, np.int64)).astype(np.int32),
                bias_exp=6,
                v=self.start_v(i),
                name=f"layer{i}",
            )
            if i == 0:
                self.source.s_out.connect(lif.a_in)
            else:
                dense = Dense(
                    weights=WEIGHT_SCALE * la["weight"].astype(np.int32),
                    weight_exp=WEIGHT_EXP,
                    num_weight_bits=8,
                    name=f"dense{i}",
                )
                self.lifs[-1].s_out.connect(dense.s_in)
                dense.a_out.connect(lif.a_in)
                self.denses.append(dense)
            self.lifs.append(lif)
        # Spikes go to ring-buffer sinks holding every step of the run (read once at the end:
        # much faster than monitors); the output's v, which no port carries, to a Monitor.
        self.sinks = []
        for lif in self.lifs[:-1]:
            sink = SpikeLog(size=lif.s_out.shape[0], steps=steps)
            lif.s_out.connect(sink.a_in)
            self.sinks.append(sink)
        self.out_monitor = Monitor()
        self.out_monitor.probe(self.lifs[-1].v, steps)

    def start_v(self, i: int) -> np.ndarray:
        return (self.layers[i]["neuron"]["vInit"].astype(np.int64) << ACT_SHIFT).astype(np.int32)

    def current(self, codes: np.ndarray) -> np.ndarray:
        """The first layer's input W x + b for int8 input codes (N, inputs): host side."""
        return codes.astype(np.int64) @ self.sp["input_weight"].T + self.sp["input_bias"]

    def run(self, currents: np.ndarray, T: int) -> None:
        """Run every input T steps, each from the start state."""
        cfg = Loihi2SimCfg(select_tag="fixed_pt")
        for k, cur in enumerate(currents):
            if k:
                self.source.data.set(cur.astype(np.int32).reshape(-1, 1))
                for i, lif in enumerate(self.lifs):
                    lif.v.set(self.start_v(i))
                for dense in self.denses:
                    dense.a_buff.set(np.zeros(dense.a_buff.shape, np.int32))
            self.lifs[0].run(condition=RunSteps(num_steps=T), run_cfg=cfg)

    def results(self, n: int, T: int) -> dict[str, np.ndarray]:
        """spikes_<i> (T, N, size) of every firing layer and v_out (T, N, outputs)."""
        out = {}
        for i, (lif, sink) in enumerate(zip(self.lifs, self.sinks, strict=False)):
            s = unpack(np.asarray(sink.data.get()), lif.s_out.shape[0]).reshape(n, T, -1)
            out[f"spikes_{i}"] = s.transpose(1, 0, 2).astype(np.int8)
        v = np.asarray(self.out_monitor.get_data()[self.lifs[-1].name]["v"]).reshape(n, T, -1)
        out["v_out"] = v.transpose(1, 0, 2).astype(np.int64)
        return out

    def stop(self) -> None:
        self.lifs[0].stop()


def encode(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """spikeport's input encoding: clamp(floor(x / scale + 1/2), +-127)."""
    q = np.floor(np.asarray(x, np.float64) / scale + 0.5)
    return np.clip(q, -127, 127).astype(np.int64).reshape(len(x), -1)


def run_codes(codes: np.ndarray, T: int, path: Path = HERE / "network.h5") -> dict:
    layers, sp = read(path)
    cur = codes.astype(np.int64) @ sp["input_weight"].T + sp["input_bias"]
    net = LavaNet(path, cur[0], len(codes) * T)
    try:
        net.run(cur, T)
        return net.results(len(codes), T)
    finally:
        net.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help=".npz with x (float inputs) and optionally y")
    ap.add_argument("--codes", help=".npz with codes (N, inputs): int8 input codes")
    ap.add_argument("-n", type=int, default=20, help="inputs to run (with --data)")
    ap.add_argument("-T", type=int, default=8, help="timesteps per input")
    ap.add_argument("--out", help="write spikes and the output to this .npz")
    args = ap.parse_args()
    _, sp = read(HERE / "network.h5")
    if args.codes:
        codes, y = np.load(args.codes)["codes"], None
    elif args.data:
        d = np.load(args.data)
        codes = encode(d["x"][: args.n], sp["input_scale"])
        y = d["y"][: args.n] if "y" in d else None
    else:
        ap.error("give --data or --codes")
    res = run_codes(codes, args.T)
    if args.out:
        np.savez(args.out, **res)
    acc = res["v_out"] >> ACT_SHIFT
    pred = acc[-1].argmax(-1)
    print("predictions:", " ".join(map(str, pred)))
    if y is not None:
        print(f"accuracy at T={args.T}: {(pred == y).mean():.4f} on {len(y)} inputs")


if __name__ == "__main__":
    main()
