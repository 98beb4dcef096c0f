#!/usr/bin/env python3
"""Run a spikeport network on a SpiNNaker2 chip with py-spinnaker2.

Written by `spikeport emit --target spinnaker2`; reads network.json beside it.

    python run_spinnaker2.py --eth-ip 192.168.1.25 --data test.npz -n 10 -T 8

For every input it builds the network (the first layer's current depends on the input and is
set as i_offset of the first populations: direct encoding), runs T + steps_ahead steps on
hardware.SpiNNaker2Chip, reads the output population's potential (the output accumulator; the
sum of its parts where network.json lists partial accumulators) at
the output depth + t - 1 for t = 1..T and writes results.npz: acc (N, T, outputs, int), pred (N,),
and with --record-spikes the spikes of every neuron layer (N, T, size) aligned the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--eth-ip", required=True, help="IP address of the SpiNNaker2 chip board")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help=".npz with float inputs (encoded here as spikeport does)")
    src.add_argument("--codes", help=".npz with int8 input codes (already encoded)")
    p.add_argument("--key", default="x", help="array name in the .npz (default x)")
    p.add_argument("-n", "--count", type=int, default=None, help="inputs to run (default all)")
    p.add_argument("-T", "--timesteps", type=int, default=8)
    p.add_argument("--network", default=str(HERE / "network.json"))
    p.add_argument("--neurons-per-core", type=int, default=None)
    p.add_argument("--record-spikes", action="store_true", help="also record every neuron layer")
    p.add_argument("--out", default="results.npz")
    return p.parse_args(argv)


def encode(x: np.ndarray, inp: dict) -> np.ndarray:
    """spikeport's input rule: q = clamp(floor(x / scale + 1/2), -127, 127)."""
    lim = (1 << (inp["bits"] - 1)) - 1
    q = np.floor(np.asarray(x, np.float64) / inp["scale"] + 0.5)
    return np.clip(q, -lim, lim).astype(np.int64).reshape(len(x), -1)


def load_codes(args: argparse.Namespace, net: dict) -> np.ndarray:
    data = np.load(args.data or args.codes)
    x = data[args.key][: args.count]
    if args.data:
        return encode(x, net["input"])
    return np.asarray(x, np.int64).reshape(len(x), -1)


def i_offset(pop: dict, codes: np.ndarray) -> list[float]:
    """Constant current plus the host-side first layer for this input (exact integers)."""
    cur = np.asarray(pop["params"]["i_offset"], np.int64).copy()
    for i, j, w in pop["input_current"] or []:
        cur[j] += w * int(codes[i])
    return [float(c) for c in cur]


def lif_params(pop: dict, codes: np.ndarray) -> dict:
    p = pop["params"]
    return {
        "threshold": [float(t) for t in p["threshold"]],
        "alpha_decay": float(p["alpha_decay"]),
        "i_offset": i_offset(pop, codes),
        "v_init": [float(v) for v in p["v_init"]],
        "v_reset": float(p["v_reset"]),
        "reset": p["reset"],
    }


def build(net: dict, codes: np.ndarray, npc: int, record_spikes: bool):
    from spinnaker2 import snn

    pops = {}
    for pop in net["populations"]:
        record = list(pop["record"])
        if record_spikes and pop["role"] == "neuron" and "spikes" not in record:
            record.append("spikes")
        pops[pop["name"]] = snn.Population(
            size=pop["size"],
            neuron_model=pop["neuron_model"],
            params=lif_params(pop, codes),
            name=pop["name"],
            record=record,
        )
        pops[pop["name"]].set_max_atoms_per_core(npc)
    projections = [
        snn.Projection(pre=pops[p["pre"]], post=pops[p["post"]], connections=p["connections"])
        for p in net["projections"]
    ]
    network = snn.Network("spikeport")
    network.add(*pops.values(), *projections)
    return network, pops


def read_voltages(pop, size: int, steps: int) -> np.ndarray:
    """(steps, size) potentials: get_voltages() gives one float array per neuron."""
    v = pop.get_voltages()
    return np.stack([np.asarray(v[i], np.float64)[:steps] for i in range(size)], axis=1)


def read_spikes(pop, size: int, steps: int) -> np.ndarray:
    """(steps, size) 0/1 from get_spikes(): {neuron: [step, ...]}, steps counted from 0."""
    out = np.zeros((steps, size), np.int8)
    for i, times in pop.get_spikes().items():
        for t in times:
            if 0 <= int(t) < steps:
                out[int(t), int(i)] = 1
    return out


def run_one(hw, net: dict, codes: np.ndarray, T: int, npc: int, record_spikes: bool) -> dict:
    network, pops = build(net, codes, npc, record_spikes)
    steps = T + net["steps_ahead"]
    hw.run(network, steps)
    out = net["output"]
    parts = out.get("parts", [out["population"]])  # partial accumulators: the host adds them
    v = sum(np.rint(read_voltages(pops[name], out["size"], steps)) for name in parts)
    res = {"acc": v[out["depth"] : out["depth"] + T].astype(np.int64)}  # rounded above
    if record_spikes:
        for probe in net["probes"]:
            s = read_spikes(pops[probe["population"]], probe["size"], steps)
            res[f"spikes/{probe['node']}"] = s[probe["depth"] : probe["depth"] + T]
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    net = json.loads(Path(args.network).read_text())
    T = args.timesteps
    if not 1 <= T <= net["max_timesteps"]:
        raise SystemExit(f"-T {T} is outside 1..{net['max_timesteps']} (proven range)")
    npc = args.neurons_per_core or net["neurons_per_core"]
    codes = load_codes(args, net)
    from spinnaker2 import hardware

    hw = hardware.SpiNNaker2Chip(eth_ip=args.eth_ip)
    results = [run_one(hw, net, c, T, npc, args.record_spikes) for c in codes]
    arrays = {k: np.stack([r[k] for r in results]) for k in results[0]} if results else {}
    arrays["pred"] = arrays["acc"][:, -1].argmax(axis=-1) if results else np.zeros(0, np.int64)
    np.savez(args.out, **arrays)
    for k, p in enumerate(arrays["pred"]):
        print(f"input {k}: prediction {int(p)}")
    print(f"wrote {args.out} ({len(codes)} inputs x {T} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
