"""How much memory a fine-tuning run needs, checked before the first epoch.

Backpropagation through T steps keeps every step's activations for the backward pass, so
memory grows with batch x T x the network's width: all-MiniLM-L6-v2 at T = 16 took 9.8 GB at
batch 16, and the default batch (64) would need about 40 GB. Without a check the operating
system kills the run (no message) after the teacher's outputs and the first batches.

The estimate is measured, not modelled: one forward pass at batch 1 and one at batch 2 count
the bytes autograd saves for the backward pass (torch.autograd.graph.saved_tensors_hooks), so
every layer kind, T and sequence length is covered as it really runs. The backward pass then
holds a gradient beside each saved activation at worst, hence twice that: a lower bound (real
peaks on CPU were 2.3 to 4 times the saved bytes: allocator caching, temporaries), so a run
this refuses could not have fit, and one it lets through may still be tight.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from spikeport.batch import take
from spikeport.errors import BadInput

Probe = torch.Tensor | dict[str, torch.Tensor]  # two samples, on the training device

GIB = 2**30
# Bytes per parameter besides the activations: the weight, its gradient and Adam's two moments.
PARAM_COPIES = 4
# The batch a refusal suggests leaves this factor over the lower bound: measured peaks were 1.2
# to 2 times it (all-MiniLM-L6-v2 at T = 16, text_bert and the digits ViT at T = 8, on CPU).
MARGIN = 2.0


def saved_bytes(net: torch.nn.Module, x: Probe, T: int) -> int:
    """The bytes autograd keeps for the backward pass of one forward over `x` for T steps
    (each storage counted once, however many tensors view it)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, T)
    return sum(storages.values())


def training_bytes(net: torch.nn.Module, probe: Probe, T: int) -> tuple[float, float]:
    """(bytes per sample, fixed bytes) of a training step at T: the saved activations of a
    forward on the first sample of `probe` and on its first two (their difference is one
    sample's), doubled for the gradients beside them; the fixed part adds PARAM_COPIES per
    parameter."""
    first, second = (saved_bytes(net, take(probe, slice(0, n)), T) for n in (1, 2))
    per_sample = 2.0 * max(second - first, 0)
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    return per_sample, 2.0 * max(first - (second - first), 0) + PARAM_COPIES * params


def available_bytes(device: torch.device) -> float | None:
    """Memory this process may still take: the GPU's free memory, or on the CPU the system's
    MemAvailable capped by the cgroup's limit (containers); None where neither is known."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = float(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit, used = (Path("/sys/fs/cgroup", f).read_text().strip() for f in
                       ("memory.max", "memory.current"))  # fmt: skip
        if limit != "max" and free is not None:
            free = min(free, float(limit) - float(used))
    except (OSError, ValueError):
        pass
    return free


def check_memory(
    net: torch.nn.Module, probe: Probe, T: int, batch: int, processes: int, device: torch.device
) -> None:
    """BadInput, naming the batch that would fit, where the lower bound of a training step's
    memory at `batch` (per process, `processes` of them on this machine's memory) exceeds what
    is available."""
    per_sample, fixed = training_bytes(net, probe, T)
    need = fixed + per_sample * batch
    free = available_bytes(device)
    if free is None or need * processes <= free:
        return
    fits = math.floor((free / processes / MARGIN - fixed) / per_sample) if per_sample else 0
    hint = (
        f"--batch-size {fits} or less (a margin of {MARGIN:g} over the bound)"
        if fits >= 1
        else "a smaller -T, or a machine with more"
    )
    raise BadInput(
        f"fine-tuning at batch {batch} and T = {T} needs at least {need * processes / GIB:.1f} "
        f"GiB (every step's activations kept for the backward pass, and their gradients), "
        f"{free / GIB:.1f} GiB available: use {hint}"
    )
