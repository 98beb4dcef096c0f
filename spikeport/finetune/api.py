"""File-level entry point shared by the CLI and `python -m spikeport.finetune`."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from spikeport.batch import Batch
from spikeport.convert.calibrate import activation_peaks
from spikeport.data import Dataset, load_data
from spikeport.finetune.distributed import barrier, join, leave
from spikeport.finetune.train import Settings, Teacher, finetune, objective
from spikeport.ir import load, save
from spikeport.ir.graph import Graph
from spikeport.sim.kinds import SDN, check_kind, set_kind

PathLike = str | os.PathLike[str]


def _training_data(path: PathLike, graph: Graph) -> Dataset:
    """Load a data file checked against the graph: input shape, and for a classifier labels in
    0..classes-1 (a network matching its source's outputs needs none)."""
    if objective(graph) == "match":
        return load_data(path, graph.inputs)
    n_classes = graph.shape(graph.outputs[0])[-1]
    return load_data(path, graph.inputs, labels=True, n_classes=n_classes)


def teacher_model(graph: Graph, source: PathLike) -> Callable[[Batch], np.ndarray]:
    """The distillation teacher as a function of a batch: the source model's logits from
    onnxruntime (or LiteRT for a .tflite) on the file the graph was converted from (its sha256
    is checked once, here; one onnxruntime session serves every batch). A final softmax that
    import dropped is undone: the log of its probabilities is the logits up to a constant,
    which a softmax ignores."""
    from spikeport.eval.evaluate import source_model

    run = source_model(graph, source)
    dropped = graph.outputs[0] in graph.meta.get("source", {}).get("dropped_softmax", [])

    def teacher(x: Batch) -> np.ndarray:
        out = run(x)[0]
        return np.log(np.maximum(out, np.finfo(np.float32).tiny)) if dropped else out

    return teacher


def teacher_logits(graph: Graph, data: Dataset, source: PathLike) -> np.ndarray:
    """The teacher's outputs on every sample of `data` (teacher_model)."""
    return teacher_model(graph, source)(data.x)


def finetune_files(
    model: PathLike,
    data: PathLike,
    output: PathLike,
    settings: Settings | None = None,
    val: PathLike | None = None,
    device: str = "cpu",
    quiet: bool = False,
    neuron_kind: str | None = None,
    teacher: PathLike | None = None,
) -> dict[str, object] | None:
    """Read, fine-tune and write (rank 0 only); returns meta["finetune"] on rank 0, else None.

    Every input is read and checked before any process group is joined or anything trained,
    so bad data is refused at once and no output file is written. `neuron_kind` (e.g. "lava")
    gives the neurons that kind before training, so training sees what the target runs.
    `teacher`: the source model file (.onnx, .tflite), whose logits settings.distill weighs,
    or whose outputs a network without class scores learns (its validation too).
    """
    settings = settings or Settings()
    settings.check()
    graph = load(model)
    if neuron_kind is not None:  # before any data is read
        check_kind(neuron_kind)
    settings.augment.check(graph)
    train = _training_data(data, graph)
    if neuron_kind is not None:  # train the network the target runs (spikeport.sim.kinds)
        # a sigma-delta neuron is capped where the ANN's activations reach, as quantize does
        caps = activation_peaks(graph, train.x) if neuron_kind == SDN else None
        graph = set_kind(graph, neuron_kind, caps=caps)
    val_set = _training_data(val, graph) if val is not None else None
    soft: Teacher | None = None
    if teacher is not None:  # augmented images need the source model itself, batch by batch
        soft = (
            teacher_model(graph, teacher)
            if settings.augment
            else teacher_logits(graph, train, teacher)
        )
    val_soft = None
    if teacher is not None and val_set is not None and objective(graph) == "match":
        val_soft = teacher_logits(graph, val_set, teacher)
    world = join(device)
    try:
        result = finetune(graph, train, settings, val_set, world, quiet, soft, val_soft)
        if soft is not None:
            result.graph.meta["finetune"]["teacher"] = os.path.basename(str(teacher))
        if world.leader:
            save(result.graph, output)
        # Every rank waits for the leader's write before any leaves the group: a rank that tore
        # down gloo while the other still held it aborted in C++ under load ("terminate called
        # without an active exception").
        barrier(world)
        return result.graph.meta["finetune"] if world.leader else None
    finally:
        leave(world)
