"""`finetune`: train a converted network's weights, biases and thresholds through T steps.

Method (docs/finetune.md): hybrid conversion + surrogate-gradient BPTT. The converted network
is the starting point (Rathi et al. 2020; DIET-SNN, Rathi and Roy 2021, which also trains the
thresholds); the exact spiking forward of the reference simulator is unrolled for T steps and
differentiated with a surrogate spike derivative; the loss is the cross-entropy of the running
mean output after *every* step t = 1..T (a TET-style per-step loss, Deng et al. 2022), so the
network also improves at every shorter run and the prediction is never worse for stopping early.

A network whose output is not class scores (an embedding, token-level outputs, a detection
head: ir.ops.class_scores) has no labels to learn; it learns to match the source model's
outputs instead (objective "match"): the relative squared error of the same running means to
the teacher's, which needs no labels, so unlabelled calibration-like data trains it.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from spikeport import __version__
from spikeport.batch import Batch, take
from spikeport.data import Dataset
from spikeport.errors import BadInput
from spikeport.finetune.augment import Augment
from spikeport.finetune.distributed import World, all_sum, check_ranks_agree
from spikeport.finetune.grid import weight_steps
from spikeport.finetune.memory import check_memory
from spikeport.finetune.module import DEFAULT_SURROGATE, SpikingNet
from spikeport.ir.graph import Graph
from spikeport.ir.ops import class_scores

METHOD = (
    "hybrid conversion + surrogate-gradient BPTT (trainable thresholds, DIET-SNN style) "
    "with a per-step running-mean cross-entropy (TET-style)"
)
DEFAULT_EPOCHS = 20
DEFAULT_LR = 1e-3
DEFAULT_BATCH = 64
# Training samples that quantize calibrates on to find the weight grids (qat): the grids
# follow the weights and thresholds; the activation statistics only set scales elsewhere.
QAT_CALIB = 256


@dataclass
class Settings:
    """Training settings; all of them go into the output's provenance."""

    T: int = 4
    epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    surrogate: str = DEFAULT_SURROGATE
    loss: str = "every_step"  # or "final": the cross-entropy of the T-step output only
    keep_best: bool = True  # with --val: keep the epoch with the best validation score
    distill: float = 0.0  # weight of the distillation term (the source ANN's soft labels)
    temperature: float = 4.0  # of the distillation term's softmaxes
    qat: str | None = None  # a target: train through the integer weights it gets (grid.py)
    # Share of the training steps over which the learning rate rises linearly from 0 before
    # its cosine decay: Adam's first updates, before its second-moment estimates settle, are
    # what makes a pretrained transformer diverge at a rate it can otherwise take (BERT's
    # fine-tuning recipe warms up over 10 %).
    warmup: float = 0.0
    shift: int = 0  # augmentation: translate each image by up to this many pixels (augment.py)
    hflip: bool = False  # augmentation: mirror each image left-right with probability 1/2
    mixup: float = 0.0  # augmentation: blend pairs of samples, weights ~ Beta(mixup, mixup)

    @property
    def augment(self) -> Augment:
        return Augment(self.shift, self.hflip, self.mixup)

    def check(self) -> None:
        if not 1 <= self.T <= 1024:
            raise BadInput(f"-T must be between 1 and 1024, got {self.T}")
        if self.epochs < 0:
            raise BadInput(f"--epochs must be 0 or more, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0 <= self.distill <= 1:
            raise BadInput(f"--distill must be between 0 and 1, got {self.distill}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise BadInput(f"--temperature must be a positive number, got {self.temperature}")
        if not 0 <= self.warmup < 1:
            raise BadInput(f"--warmup must be at least 0 and below 1, got {self.warmup}")
        if self.shift < 0:
            raise BadInput(f"--shift must be 0 or more, got {self.shift}")
        if not (math.isfinite(self.mixup) and self.mixup >= 0):
            raise BadInput(f"--mixup must be 0 or a positive number, got {self.mixup}")
        if self.loss not in ("every_step", "final"):
            raise BadInput(f"loss '{self.loss}' is not 'every_step' or 'final'")


def objective(graph: Graph) -> str:
    """What fine-tuning learns: labels where the output holds class scores ("classify",
    cross-entropy), else the source model's outputs ("match", relative squared error)."""
    return "classify" if class_scores(graph, graph.outputs[0]) else "match"


@dataclass
class Result:
    """The fine-tuned graph and what happened on the way (one entry per epoch)."""

    graph: Graph
    history: list[dict[str, float]] = field(default_factory=list)


def running_means(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    """(n, N, ...) the mean output after each step (kind "every_step", n = T) or after the
    last one only ("final", n = 1), from the accumulated outputs (T, N, ...)."""
    T = outputs.shape[0]
    if kind == "final":
        return (outputs[-1] / T)[None]
    steps = torch.arange(1, T + 1, dtype=outputs.dtype, device=outputs.device)
    return outputs / steps.reshape((T,) + (1,) * (outputs.ndim - 1))


def match_loss(outputs: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Objective "match": the relative squared error |m - y|^2 / |y|^2 of each sample's
    running-mean output m to the teacher's y, over the steps `kind` names. Relative, so that a
    sample with small outputs weighs as much as one with large ones. For a unit-length
    teacher it is (|m| - 1)^2 + 2 |m| (1 - cos): it lifts the cosine eval reports."""
    means = running_means(outputs, kind)
    err = (means - teacher[None]).flatten(2).pow(2).sum(-1)
    ref = teacher.flatten(1).pow(2).sum(-1).clamp_min(torch.finfo(teacher.dtype).tiny)
    return (err / ref).mean()


def loss_fn(
    outputs: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    teacher: torch.Tensor | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Cross-entropy of the running-mean output (acc_t / t): every step's, or the last one's,
    to labels `y` (N,) or to class probabilities (N, classes), as mixup blends them.
    With a `teacher` (the ANN's logits) a `distill` share of it is the KL divergence of the
    same means from the teacher's soft labels at `temperature` (Hinton et al. 2015), times
    temperature^2 so that its gradients keep their size."""
    means = running_means(outputs, kind)
    n = len(means)
    ce = F.cross_entropy(means.flatten(0, 1), y.repeat(n, *([1] * (y.ndim - 1))))
    if teacher is None or distill == 0:
        return ce
    soft = F.softmax(teacher / temperature, dim=-1).repeat(n, 1)
    logp = F.log_softmax(means.flatten(0, 1) / temperature, dim=-1)
    kd = F.kl_div(logp, soft, reduction="batchmean") * temperature**2
    return (1 - distill) * ce + distill * kd


TensorBatch = torch.Tensor | dict[str, torch.Tensor]


def _tensors(x: Batch) -> TensorBatch:
    """The data as torch tensors, one per model input for multi-input models."""
    if isinstance(x, dict):
        return {k: torch.from_numpy(v) for k, v in x.items()}
    return torch.from_numpy(x)


def _on(x: TensorBatch, idx: list[int], device: torch.device) -> TensorBatch:
    """The samples `idx` of a batch, on `device`."""
    if isinstance(x, dict):
        return {k: v[idx].to(device) for k, v in x.items()}
    return x[idx].to(device)


def _batches(indices: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(indices), size):
        yield indices[i : i + size]


def _validate(
    net: SpikingNet,
    data: Dataset,
    T: int,
    world: World,
    teacher: torch.Tensor | None,
    batch_size: int = 256,
) -> float:
    """The validation score at T in float mode, sharded over ranks and summed: accuracy, or
    with a `teacher` (objective "match") the mean cosine of each sample's output to its."""
    x = _tensors(data.x)
    y = None if teacher is not None else torch.from_numpy(data.y)
    mine = list(range(world.rank, len(data), world.size))
    total = 0.0
    net.eval()
    with torch.no_grad():
        for idx in _batches(mine, batch_size):
            out = net(_on(x, idx, world.device), T)[-1].cpu()
            if y is not None:
                total += int((out.argmax(-1) == y[idx]).sum())
            else:
                cos = F.cosine_similarity(out.flatten(1).double(), teacher[idx].flatten(1).double())
                total += float(cos.sum())
    hits, n = all_sum(world, [total, len(mine)])
    return hits / n


def _optimizer(net: SpikingNet, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=lr)


def _schedule(
    opt: torch.optim.Optimizer, total: int, warmup: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over the first `warmup` share of the `total` steps, then cosine decay
    to 0 over the rest (warmup 0: the cosine decay alone)."""
    rise = int(round(warmup * total))

    def factor(step: int) -> float:
        if step < rise:
            return (step + 1) / rise
        return 0.5 * (1 + math.cos(math.pi * (step - rise) / max(1, total - rise)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# The source model's outputs: fixed, one row per training sample, or a function of a batch
# (api.teacher_model), which augmentation needs: it asks for the images as augmented.
Teacher = np.ndarray | Callable[[Batch], np.ndarray]


def _has_teacher(teacher: Teacher | None, data: Dataset) -> bool:
    return callable(teacher) or (teacher is not None and len(teacher) == len(data))


def _check_data(graph: Graph, data: Dataset, teacher: Teacher | None) -> None:
    out = graph.outputs[0]
    if objective(graph) == "match":
        if not _has_teacher(teacher, data):
            raise BadInput(
                f"graph output '{out}' (shape {graph.shape(out)}) is not class scores: "
                "fine-tuning matches the source model's outputs on the data "
                "(finetune --teacher SOURCE)"
            )
    elif data.y is None:
        raise BadInput(f"{data.path}: key 'y' (labels) is missing; fine-tuning needs labels")


class _Trainer:
    """One training run: the network (DDP-wrapped when distributed), optimiser and sampler."""

    def __init__(
        self, graph: Graph, data: Dataset, s: Settings, world: World, teacher: Teacher | None
    ):
        torch.manual_seed(s.seed)
        self.s, self.world, self.data = s, world, data
        self.net = SpikingNet(graph, s.surrogate)
        self.float_weights: list[str] = []  # weighted nodes that stay off any grid (qat)
        if s.qat is not None:
            calib = take(data.x, slice(0, QAT_CALIB))
            steps, self.float_weights = weight_steps(graph, calib, s.qat)
            self.net.on_weight_grids(steps)
        self.net = self.net.to(world.device)
        self.x = _tensors(data.x)
        self.local_batch = max(1, s.batch_size // world.size)
        if len(data) >= 2:  # refuse a batch that cannot fit before any epoch runs
            processes = world.size if world.device.type == "cpu" else 1
            probe = _on(self.x, [0, 1], world.device)
            check_memory(self.net, probe, s.T, self.local_batch, processes, world.device)
        self.model: torch.nn.Module = self.net
        if world.distributed:
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.sampler = DistributedSampler(
            range(len(data)), num_replicas=world.size, rank=world.rank, seed=s.seed
        )
        self.steps = math.ceil(len(self.sampler) / self.local_batch)
        self.opt = _optimizer(self.net, s.lr)
        self.sched = _schedule(self.opt, max(1, s.epochs * self.steps), s.warmup)
        self.match = objective(graph) == "match"
        self.y = None if self.match else torch.from_numpy(data.y)
        self.classes = graph.shape(graph.outputs[0])[-1]  # of the labels mixup blends
        self.augment = s.augment
        self.gen = torch.Generator().manual_seed(s.seed + 7919 * world.rank)  # per rank
        if self.augment and teacher is not None and not callable(teacher):
            raise BadInput(
                "augmentation asks the teacher for the augmented images: pass the source "
                "model (finetune.teacher_model), not its outputs on the data"
            )
        self.teacher = (
            torch.from_numpy(teacher.astype(np.float32))
            if isinstance(teacher, np.ndarray)
            else teacher
        )
        self.val_text = ""  # the last validation score, kept on the progress bar

    def epoch(self, e: int, bar: tqdm) -> float:
        """Train one epoch; returns the mean training loss over all ranks."""
        self.sampler.set_epoch(e)
        self.net.train()
        total, n = 0.0, 0
        for idx in _batches(list(self.sampler), self.local_batch):
            xb = _on(self.x, idx, self.world.device)
            yb = None if self.y is None else self.y[idx].to(self.world.device)
            xb, yb = self._augmented(xb, yb)
            self.opt.zero_grad(set_to_none=True)
            soft = self._teacher(idx, xb)
            out = self.model(xb, self.s.T)
            if self.match:
                loss = match_loss(out, soft, self.s.loss)
            else:
                loss = loss_fn(out, yb, self.s.loss, soft, self.s.distill, self.s.temperature)
            loss.backward()
            self.opt.step()
            self.net.constrain()
            self.sched.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
            bar.update(1)
            bar.set_postfix_str(f"loss {total / n:.4f}{self.val_text}", refresh=False)
        loss_sum, count = all_sum(self.world, [total, n])
        return loss_sum / count

    def _augmented(
        self, xb: TensorBatch, yb: torch.Tensor | None
    ) -> tuple[TensorBatch, torch.Tensor | None]:
        """The batch moved, mirrored and blended as the settings ask; blended labels become
        class probabilities (lam of one sample's class, 1 - lam of its partner's)."""
        xb = self.augment(xb, self.gen)
        if self.augment.mixup > 0:
            xb, lam, perm = self.augment.mix(xb, self.gen)
            if yb is not None:
                onehot = F.one_hot(yb.long(), self.classes).float()
                w = lam.to(onehot)[:, None]
                yb = w * onehot + (1 - w) * onehot[perm.to(onehot.device)]
        return xb, yb

    def _teacher(self, idx: list[int], xb: TensorBatch) -> torch.Tensor | None:
        """The teacher's outputs for the batch: its rows of the fixed outputs, or the source
        model run on the batch as the network sees it (augmented)."""
        if self.teacher is None:
            return None
        if isinstance(self.teacher, torch.Tensor):
            return self.teacher[idx].to(self.world.device)
        x = (
            {k: v.cpu().numpy() for k, v in xb.items()}
            if isinstance(xb, dict)
            else xb.cpu().numpy()
        )
        out = np.asarray(self.teacher(x), dtype=np.float32)
        return torch.from_numpy(out).to(self.world.device)


def finetune(
    graph: Graph,
    data: Dataset,
    settings: Settings | None = None,
    val: Dataset | None = None,
    world: World | None = None,
    quiet: bool = False,
    teacher: Teacher | None = None,
    val_teacher: np.ndarray | None = None,
) -> Result:
    """Fine-tune the float spiking `graph` (stage "snn") on `data` for T steps.

    Returns a new graph (same nodes, new float weights, biases and thresholds) whose
    meta["finetune"] records the settings, the data and the validation score. `teacher` holds
    the source model's outputs on `data` (onnxruntime's or LiteRT's, not the graph's ANN view,
    whose biases the T-aware conversion moved for its spikes), or the source model itself as
    a function of a batch (api.teacher_model; augmentation needs it): a classifier distils
    them with weight settings.distill; any other output (objective "match") learns them, and
    `val_teacher` (the same on `val`) scores the validation set by cosine.
    """
    s = settings or Settings()
    s.check()
    match = objective(graph) == "match"
    s.augment.check(graph)
    if s.distill > 0 and not match and not _has_teacher(teacher, data):
        raise BadInput(
            "distillation needs the source model's logits on the training data "
            "(finetune --teacher SOURCE)"
        )
    world = world or World()
    _check_data(graph, data, teacher)
    if val is not None:
        _check_data(graph, val, val_teacher)
    tr = _Trainer(graph, data, s, world, teacher if s.distill > 0 or match else None)
    vt = torch.from_numpy(val_teacher) if match and val_teacher is not None else None
    metric = "cosine" if match else "accuracy"
    history: list[dict[str, float]] = []
    best: tuple[float, dict | None, int] = (-math.inf, None, 0)  # (val score, state, epoch)
    if val is not None:
        score = _validate(tr.net, val, s.T, world, vt)
        history.append({"epoch": 0, f"val_{metric}": score})
        best = (score, copy.deepcopy(tr.net.state_dict()), 0)
    bar = tqdm(
        total=s.epochs * tr.steps,
        desc=f"finetune T={s.T}",
        unit="batch",
        disable=True if (quiet or not world.leader) else None,
        leave=False,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    with bar:
        for e in range(1, s.epochs + 1):
            rec: dict[str, float] = {"epoch": e, "loss": tr.epoch(e, bar)}
            if val is not None:
                rec[f"val_{metric}"] = score = _validate(tr.net, val, s.T, world, vt)
                tr.val_text = f", val {100 * score:.2f}%" if not match else f", val cos {score:.4f}"
                bar.set_postfix_str(f"loss {rec['loss']:.4f}{tr.val_text}")
                if score >= best[0] or not s.keep_best:
                    best = (score, copy.deepcopy(tr.net.state_dict()), e)
            history.append(rec)
            if bar.disable and not quiet and world.leader:  # off a terminal: a line an epoch
                _epoch_line(s, rec, tr.val_text, time.perf_counter() - started)
    if best[1] is not None:
        tr.net.load_state_dict(best[1])
    check_ranks_agree(world, tr.net)
    out = tr.net.cpu().to_graph()
    out.meta["finetune"] = _provenance(s, data, val, history, best, world, metric)
    if s.qat is not None:
        out.meta["finetune"]["float_weights"] = tr.float_weights
    out.meta["default_timesteps"] = s.T
    return Result(out, history)


def _epoch_line(s: Settings, rec: dict[str, float], val_text: str, elapsed: float) -> None:
    """One line on stderr per epoch where no progress bar shows (a log file, CI): a run of
    hours otherwise says nothing until it ends."""
    print(
        f"finetune T={s.T}: epoch {rec['epoch']}/{s.epochs}, loss {rec['loss']:.4f}{val_text}, "
        f"{elapsed:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def _provenance(
    s: Settings,
    data: Dataset,
    val: Dataset | None,
    history: list[dict[str, float]],
    best: tuple[float, dict | None, int],
    world: World,
    metric: str,
) -> dict[str, object]:
    meta: dict[str, object] = {
        "method": METHOD,
        "objective": "match" if metric == "cosine" else "classify",
        **asdict(s),
        "optimizer": "Adam, cosine learning-rate decay to 0"
        + (f" after a linear warmup over {s.warmup:.0%} of the steps" if s.warmup else ""),
        "data": data.provenance,
        "world_size": world.size,
        "ranks_agree": True,  # checked bit for bit before writing (trivially true on one)
        "device": world.device.type,
        "spikeport_version": __version__,
        "torch_version": torch.__version__,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
    }
    if val is not None:
        meta["val"] = {
            **val.provenance,
            f"{metric}_before": history[0][f"val_{metric}"],
            metric: best[0],
            "epoch": best[2],
            "mode": f"float, T={s.T}",
        }
    return meta
