"""Run an emitted model.nir in snnTorch, a real NIR consumer, the way spikeport's float simulator
runs the network, and say exactly which of snnTorch's import choices had to change.

snnTorch 1.0's `import_from_nir` cannot express three of our semantics and gets two NIR details
its own way; each fix below is one a user must make too (the README of an emitted directory
shows them).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

CONSUMER_FIXES = (
    "IF becomes snn.Leaky(beta=0.9): set beta to 1 (an IF neuron does not leak)",
    "IF becomes snn.Leaky(init_hidden=False), whose (spike, membrane) tuple the graph passes "
    "on as the next layer's input: set init_hidden to True (the membrane stays in the module)",
    "IF becomes snn.Leaky(reset_delay=False): set reset_delay to True, so the threshold is "
    "subtracted once per spike (reset by subtraction, as spikeport)",
    "Flatten's start_dim counts NIR's axes, which exclude the batch; snnTorch passes it to "
    "torch.nn.Flatten, whose axis 0 is the batch: set start_dim to 1",
    "the membrane starts at 0: set it to 0.5 * v_threshold (spikeport's initial potential) "
    "before the first step",
    "the imported module returns (output, state): pass that state back at the next step "
    "(`out, state = module(x, state)`); recurrent edges, which max pooling uses, read the "
    "previous step's output from it and get zeros without it",
)
UNFIXABLE = (
    "snnTorch fires at v > v_threshold, spikeport at v >= v_threshold: they differ only where "
    "v lands exactly on the threshold",
    "snnTorch copies weights as float32 and runs float32; spikeport's float simulator runs "
    "float64 (SnnTorchRun reloads the file's weights and runs float64)",
)


def _import(path: Path) -> tuple[Any, Any]:
    import nir
    from snntorch.import_nir import import_from_nir

    graph = nir.read(str(path))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        module = import_from_nir(graph)
    return graph, module


def _module_name(name: str) -> str:
    """nirtorch's name for the module of NIR node `name`."""
    import keyword

    name = name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


class SnnTorchRun:
    """model.nir in snnTorch with CONSUMER_FIXES applied; `run(x, T)` records every IF layer."""

    def __init__(self, path: Path, dtype: str = "float64"):
        import snntorch as snn
        import torch

        self.torch, self.dtype = torch, getattr(torch, dtype)
        self.graph, self.module = _import(path)
        import nir

        self.neurons: dict[str, Any] = {}
        for name, node in self.graph.nodes.items():
            mod = getattr(self.module, _module_name(name), None)
            if isinstance(node, nir.IF):
                assert isinstance(mod, snn.Leaky)
                mod.beta = torch.tensor(1.0)
                mod.init_hidden = True
                mod.reset_delay = True
                if mod.reset_mechanism_val != 0:  # snnTorch's default; keep it explicit
                    mod.reset_mechanism = "subtract"
                    mod.state_function = mod._base_sub
                # its spikes come out float32 whatever the module's dtype: keep the run in one
                mod.register_forward_hook(lambda m, i, out: out.to(self.dtype))
                self.neurons[name] = (mod, node)
            elif isinstance(node, nir.Flatten) and isinstance(mod, torch.nn.Flatten):
                mod.start_dim = node.start_dim + 1
        self.module.to(self.dtype)
        self._exact_params(nir)

    def _exact_params(self, nir: Any) -> None:
        """snnTorch copies weights through torch.Tensor (float32): put the file's values back."""
        for name, node in self.graph.nodes.items():
            mod = getattr(self.module, _module_name(name), None)
            if isinstance(node, (nir.Affine, nir.Conv2d)) and mod is not None:
                mod.weight.data = self.torch.tensor(np.asarray(node.weight), dtype=self.dtype)
                mod.bias.data = self.torch.tensor(np.asarray(node.bias), dtype=self.dtype)

    def reset(self, batch: int) -> None:
        for mod, node in self.neurons.values():
            half = self.torch.tensor(0.5 * np.asarray(node.v_threshold), dtype=self.dtype)
            mod.mem = half.expand((batch,) + tuple(half.shape)).clone()

    def run(self, x: np.ndarray, T: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Spikes per IF node (T, N, size) and the output summed over steps 1..t (T, N, out)."""
        seen: dict[str, list[np.ndarray]] = {name: [] for name in self.neurons}
        hooks = [
            mod.register_forward_hook(
                lambda m, i, out, name=name: seen[name].append(out.detach().numpy().copy())
            )
            for name, (mod, _) in self.neurons.items()
        ]
        try:
            self.reset(len(x))
            inp = self.torch.tensor(np.asarray(x), dtype=self.dtype)
            outs = []
            state = None  # nirtorch's: the previous step's outputs that recurrent edges read
            with self.torch.no_grad():
                for _ in range(T):
                    out, state = self.module(inp, state)
                    outs.append(out.numpy().reshape(len(x), -1))
        finally:
            for h in hooks:
                h.remove()
        spikes = {k: np.stack(v).reshape(T, len(x), -1) for k, v in seen.items()}
        return spikes, np.cumsum(np.stack(outs), axis=0)
