"""Run network.h5 (written by `spikeport emit --target lava`, sigma-delta kind) in Lava's
bit-accurate CPU model.

Needs lava-nc 0.10.0, numpy and h5py (not spikeport). Builds the network from Lava processes:
per layer a SigmaDelta (ReLU; the output layer's is UNIT and sends nothing), fed either by a
RingBuffer that sends its input W x + b at the first step of each input (sigma keeps it) or
by graded Dense connections (num_message_bits 24) from earlier layers; run with
Loihi2SimCfg(select_tag="fixed_pt"). A small process of our own (GradedLog) records every
layer's graded messages and writes them to a file at the last step; a Monitor records the
output layer's act (sigma + bias: the output at every step).

    python run_lava.py --data test.npz -n 20 -T 8          # predictions (and accuracy)
    python run_lava.py --codes codes.npz -T 8 --out run.npz  # int8 input codes in, every
                                                                 # layer's messages and output

Every input runs T steps from the same start: between inputs the script sets every
SigmaDelta's sigma, act and residue back to 0 and empties every Dense's one-step buffer.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.monitor.process import Monitor
from lava.proc.sdn.process import ActivationMode, SigmaDelta

HERE = Path(__file__).resolve().parent
MESSAGE_BITS = 24  # graded messages: SigmaDelta's s_out is 24-bit
# An int8 weight w goes to the Dense as 2 * w with weight_exp -1: mixed-sign 8-bit weights lose
# their least significant bit in Lava (truncate_weights), 2 * w loses nothing, and the shift
# brings the sum back to sum(w * s) exactly (2 * w * s is even).
WEIGHT_SCALE, WEIGHT_EXP = 2, -1
STATE_VARS = ("sigma", "act", "residue", "error")


class GradedLog(AbstractProcess):
    """Records a layer's graded messages at every step; writes them to `path` at the last."""

    def __init__(self, *, size: int, steps: int, path: str) -> None:
        super().__init__(size=size, steps=steps, path=path)
        self.a_in = InPort(shape=(size,))


@implements(proc=GradedLog, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedLogModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=MESSAGE_BITS)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self.log = np.zeros((proc_params["steps"], proc_params["size"]), np.int32)

    def run_spk(self) -> None:
        self.log[self.time_step - 1] = self.a_in.recv()
        if self.time_step == len(self.log):  # the process lives in its own OS process
            np.save(self.proc_params["path"], self.log)


def read(path: Path) -> tuple[list[dict], dict]:
    """The layers of network.h5 (netx layout, SDNN neurons, spikeport's src / extra for a
    DAG of layers) and its /spikeport group."""
    with h5py.File(path, "r") as f:
        layers = []
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            la = {k: g[k][()] for k in g if k not in ("neuron", "extra", "type", "name")}
            la["name"] = g["name"][()].decode()
            la["neuron"] = {k: g["neuron"][k][()] for k in g["neuron"]}
            la["inputs"] = [] if int(la["src"]) < 0 else [(int(la["src"]), la["weight"])]
            la["inputs"] += [(int(e["src"][()]), e["weight"][()]) for e in g["extra"].values()]
            layers.append(la)
        sp = {k: f["spikeport"][k][()] for k in f["spikeport"]}
    sp["meta"] = json.loads(sp["meta"].decode())
    return layers, sp


def currents(layers: list[dict], codes: np.ndarray) -> dict[int, np.ndarray]:
    """Each host-fed layer's input W x + b for int8 input codes (N, inputs), by layer index."""
    return {
        i: codes.astype(np.int64) @ la["input_weight"].T + la["input_bias"]
        for i, la in enumerate(layers)
        if "input_weight" in la
    }


def sigma_delta(la: dict, i: int) -> SigmaDelta:
    """One layer's SigmaDelta: vth and bias are mantissas Lava shifts left by state_exp."""
    nrn = la["neuron"]
    size = int(np.prod(la["shape"]))
    unit = nrn["actMode"].decode() == "unit"
    exp = int(nrn["stateExp"])
    return SigmaDelta(
        shape=(size,),
        vth=int(nrn["vThMant"]),
        bias=(la.get("bias", np.zeros(size, np.int64)).astype(np.int64) >> exp).astype(np.int32),
        act_mode=ActivationMode.UNIT if unit else ActivationMode.RELU,
        cum_error=False,
        spike_exp=0,
        state_exp=exp,
        name=f"layer{i}",
    )


class LavaNet:
    """The Lava processes of network.h5, logging every layer; `run` feeds inputs."""

    def __init__(self, path: Path, first: dict[int, np.ndarray], T: int, n: int, logdir: Path):
        self.layers, self.sp = read(path)
        self.T = T
        self.sources: dict[int, RingBuffer] = {}
        self.sds, self.denses, self.logs = [], [], []
        for i, la in enumerate(self.layers):
            sd = sigma_delta(la, i)
            if i in first:  # host-fed: the input current at the first step only
                self.sources[i] = RingBuffer(data=self.schedule(first[i]))
                self.sources[i].s_out.connect(sd.a_in)
            for k, (src, w) in enumerate(la["inputs"]):
                dense = Dense(
                    weights=WEIGHT_SCALE * w.astype(np.int32),
                    weight_exp=WEIGHT_EXP,
                    num_weight_bits=8,
                    num_message_bits=MESSAGE_BITS,
                    name=f"dense{i}_{k}",
                )
                self.sds[src].s_out.connect(dense.s_in)
                dense.a_out.connect(sd.a_in)  # several Dense into one a_in: Lava sums them
                self.denses.append(dense)
            self.sds.append(sd)
        for i, sd in enumerate(self.sds[:-1]):
            path_i = str(logdir / f"log{i}.npy")
            log = GradedLog(size=sd.s_out.shape[0], steps=n * T, path=path_i)
            sd.s_out.connect(log.a_in)
            self.logs.append(path_i)
        self.out_monitor = Monitor()
        self.out_monitor.probe(self.sds[-1].act, n * T)

    def schedule(self, current: np.ndarray) -> np.ndarray:
        """(inputs, T): the current at the first step of the input, nothing after."""
        data = np.zeros((len(current), self.T), np.int32)
        data[:, 0] = current
        return data

    def run(self, cur: dict[int, np.ndarray]) -> None:
        """Run every input T steps, each from the start state."""
        cfg = Loihi2SimCfg(select_tag="fixed_pt")
        for k in range(len(next(iter(cur.values())))):
            if k:
                for i, source in self.sources.items():
                    source.data.set(self.schedule(cur[i][k]))
                for sd in self.sds:
                    for var in STATE_VARS:
                        getattr(sd, var).set(np.zeros(sd.a_in.shape, np.int32))
                for dense in self.denses:
                    dense.a_buff.set(np.zeros(dense.a_buff.shape, np.int32))
            self.sds[0].run(condition=RunSteps(num_steps=self.T), run_cfg=cfg)

    def results(self, n: int) -> dict[str, np.ndarray]:
        """spikes_<i> (T, N, size): every layer's messages; act_out (T, N, outputs)."""
        out = {}
        for i, path in enumerate(self.logs):
            s = np.load(path).reshape(n, self.T, -1)
            out[f"spikes_{i}"] = s.transpose(1, 0, 2).astype(np.int64)
        act = np.asarray(self.out_monitor.get_data()[self.sds[-1].name]["act"])
        out["act_out"] = act.reshape(n, self.T, -1).transpose(1, 0, 2).astype(np.int64)
        return out

    def stop(self) -> None:
        self.sds[0].stop()


def encode(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """spikeport's input encoding: clamp(floor(x / scale + 1/2), +-127)."""
    q = np.floor(np.asarray(x, np.float64) / scale + 0.5)
    return np.clip(q, -127, 127).astype(np.int64).reshape(len(x), -1)


def run_codes(codes: np.ndarray, T: int, path: Path = HERE / "network.h5") -> dict:
    layers, _ = read(path)
    cur = currents(layers, codes)
    with tempfile.TemporaryDirectory(prefix="lava-sdn-") as tmp:
        first = {i: c[0] for i, c in cur.items()}
        net = LavaNet(path, first, T, len(codes), Path(tmp))
        try:
            net.run(cur)
            return net.results(len(codes))
        finally:
            net.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help=".npz with x (float inputs) and optionally y")
    ap.add_argument("--codes", help=".npz with codes (N, inputs): int8 input codes")
    ap.add_argument("-n", type=int, default=20, help="inputs to run (with --data)")
    ap.add_argument("-T", type=int, default=8, help="timesteps per input")
    ap.add_argument("--out", help="write messages and the output to this .npz")
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
    pred = res["act_out"][-1].argmax(-1)  # the output at step T: the latest value
    print("predictions:", " ".join(map(str, pred)))
    if y is not None:
        print(f"accuracy at T={args.T}: {(pred == y).mean():.4f} on {len(y)} inputs")


if __name__ == "__main__":
    main()
