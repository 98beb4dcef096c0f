"""Data parallelism under torchrun, and the same code path on one process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT) for every process; when
they are there, fine-tuning joins the process group (gloo on CPU, nccl on CUDA), wraps the
network in DistributedDataParallel and shards every epoch with DistributedSampler. A plain run
is world size 1 with the same sampler, so both paths walk the data in the same order.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spikeport.errors import BadInput, SpikeportError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class World:
    """Where this process sits: rank of world size, and whether a process group is in use."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that shows progress and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise BadInput(
            f"environment variable {name}={os.environ[name]!r} is not an integer"
        ) from None


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for each process it starts."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def end_worker() -> None:
    """A torchrun worker, its work done and its process group destroyed, ends here: streams
    flushed, then os._exit(0), past the interpreter's finalization, where gloo's worker threads
    can still hold tensors and abort the process (SIGABRT, "terminate called without an
    active exception", seen now and then in this project's test runs; pytorch/pytorch PR
    179291)."""
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`cpu`, or this process's GPU for `cuda` (refused when torch sees none)."""
    if name not in DEVICES:
        raise BadInput(f"--device '{name}' is not one of {DEVICES}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BadInput(
            f"--device cuda: torch {torch.__version__} sees no CUDA device; use --device cpu"
        )
    if local_rank >= torch.cuda.device_count():
        raise BadInput(
            f"LOCAL_RANK {local_rank} has no GPU (torch sees {torch.cuda.device_count()})"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def join(device: str) -> World:
    """Join torchrun's process group if launched by it (else world size 1) on `device`."""
    if not launched_by_torchrun() or _env_int("WORLD_SIZE", 1) == 1:
        return World(device=pick_device(device))
    rank, size, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    dev = pick_device(device, local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return World(rank, size, local, dev)


def barrier(world: World) -> None:
    """Wait for every rank (a no-op on one process)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()


def leave(world: World) -> None:
    """Leave the process group joined by `join` (a no-op on one process)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(world: World, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks (the values themselves on one process)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


class RanksDisagree(SpikeportError):
    """Replicas ended with different parameters: a broken launch, never a user error."""

    exit_code = 1


def check_ranks_agree(world: World, module: torch.nn.Module) -> None:
    """Every rank must hold bit-identical parameters after training (DDP's promise, checked)."""
    if not world.distributed:
        return
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        raise RanksDisagree(
            f"rank {world.rank}: the {world.size} replicas ended with different parameters "
            f"(max difference {float((hi - lo).abs().max()):.3g})"
        )
