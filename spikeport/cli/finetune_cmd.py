"""`spikeport finetune`: the click command over spikeport.finetune (no logic of its own).

Runs unchanged under torchrun: every process trains its shard, only rank 0 writes the output.
"""

from __future__ import annotations

import click

from spikeport.cli.main import (
    QUIET,
    TIMESTEPS,
    Finite,
    main,
    output_file,
    positive_int,
    refuse_overwrite,
    say,
)
from spikeport.sim.kinds import NEURON_KINDS


@main.command("finetune")
@click.argument("model")
@click.option(
    "--data", required=True, help="Training .npz (keys x, y; text models: one key per input, y)."
)
@click.option(
    "-T", "timesteps", type=TIMESTEPS, default=4, show_default=True, help="Timesteps to train for."
)
@click.option("--epochs", type=positive_int(), default=20, show_default=True)
@click.option(
    "--lr",
    type=Finite(0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Adam learning rate (cosine decay).",
)
@click.option(
    "--warmup",
    type=Finite(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Share of the steps the learning rate rises linearly from 0 over, before its decay.",
)
@click.option(
    "--batch-size",
    type=positive_int(),
    default=64,
    show_default=True,
    help="Global batch size (split over torchrun processes).",
)
@click.option(
    "--loss",
    type=click.Choice(["every-step", "final"]),
    default="every-step",
    show_default=True,
    help="Score the running-mean output after every step 1..T, or after step T only.",
)
@click.option(
    "--shift",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Augment: translate each training image by a random offset of up to this many pixels "
    "per axis (zero fill), drawn anew every batch.",
)
@click.option(
    "--hflip", is_flag=True, help="Augment: mirror each training image left-right at random."
)
@click.option(
    "--mixup",
    type=Finite(0),
    default=0.0,
    show_default=True,
    metavar="ALPHA",
    help="Augment: blend each training sample with another of its batch, the weight drawn from "
    "Beta(ALPHA, ALPHA), its label and the teacher's outputs with it; 0: off (0.2: mild).",
)
@click.option("--val", default=None, help="Validation .npz (like --data): keeps the best epoch.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--target",
    default=None,
    help="Train for the neuron kind this target runs (e.g. lava); default: the graph's own.",
)
@click.option(
    "--kind",
    type=click.Choice(NEURON_KINDS),
    default=None,
    help="Train for this neuron kind of the target (lava: lava or sdn); default: its first.",
)
@click.option(
    "--teacher",
    default=None,
    help="The source model (.onnx, .tflite) MODEL was converted from: distil its logits "
    "(a model whose output is not class scores learns its outputs; labels not needed).",
)
@click.option(
    "--distill",
    type=Finite(0, 1),
    default=None,
    help="Weight of the teacher's soft labels against the labels' cross-entropy "
    "[default: 1 with --teacher, else 0].",
)
@click.option(
    "--temperature",
    type=Finite(0, min_open=True),
    default=4.0,
    show_default=True,
    help="Softmax temperature of distillation.",
)
@click.option(
    "--qat",
    "qat",
    default=None,
    metavar="TARGET",
    help="Quantization-aware: train through the integer weights `quantize --target TARGET` "
    "gives (rounded in the forward pass, straight-through gradient).",
)
@click.option("-o", "--output", "output", required=True, callback=output_file, help="Output .spk.")
@QUIET
def finetune_cmd(
    model: str,
    data: str,
    timesteps: int,
    epochs: int,
    lr: float,
    warmup: float,
    batch_size: int,
    loss: str,
    shift: int,
    hflip: bool,
    mixup: float,
    val: str | None,
    device: str,
    seed: int,
    target: str | None,
    kind: str | None,
    teacher: str | None,
    distill: float | None,
    temperature: float,
    qat: str | None,
    output: str,
    quiet: bool,
) -> None:
    """Fine-tune a converted MODEL (.spk, stage snn) through T timesteps on labelled DATA
    (or, for an embedding or other output that is not class scores, on the source model's
    outputs: --teacher)."""
    from spikeport.data import check_token_ids, load_data
    from spikeport.finetune import Settings, finetune_files
    from spikeport.finetune.distributed import end_worker
    from spikeport.ir import load

    refuse_overwrite((output,), (model, data, val, teacher))
    if distill and teacher is None:
        raise click.BadParameter("needs --teacher, the source model", param_hint="--distill")
    weight = (1.0 if teacher is not None else 0.0) if distill is None else distill
    settings = Settings(
        T=timesteps,
        epochs=epochs,
        lr=lr,
        warmup=warmup,
        batch_size=batch_size,
        seed=seed,
        loss=loss.replace("-", "_"),
        distill=weight,
        temperature=temperature,
        qat=qat,
        shift=shift,
        hflip=hflip,
        mixup=mixup,
    )
    if target is not None or qat is not None:
        from spikeport.quantize import get_profile
        from spikeport.targets import discover

        discover()  # target profiles register themselves
        if qat is not None:
            get_profile(qat)  # an unknown target is refused before anything runs
    if target is not None:
        kinds = get_profile(target).kinds
        if kind is not None and kind not in kinds:
            raise click.BadParameter(
                f"target '{target}' runs {', '.join(kinds)}, not '{kind}'", param_hint="--kind"
            )
        kind = kind or kinds[0]
    graph = load(model)  # token ids are checked here until finetune_files checks them itself
    for path in (data, val) if val is not None else (data,):
        check_token_ids(graph, load_data(path, graph.inputs).x, path)
    meta = finetune_files(model, data, output, settings, val, device, quiet, kind, teacher)
    if meta is None:  # not rank 0: rank 0 reports
        end_worker()
        return
    val_text = ""
    if "val" in meta:
        v = meta["val"]
        val_text = (
            f", val cosine to the source {v['cosine_before']:.4f} -> {v['cosine']:.4f}"
            if meta["objective"] == "match"
            else f", val accuracy {100 * v['accuracy_before']:.2f}% -> {100 * v['accuracy']:.2f}%"
        ) + f" (epoch {v['epoch']})"
    say(
        quiet,
        f"{output}: fine-tuned at T={timesteps} for {epochs} epochs on "
        f"{meta['data']['n']} samples{_augmented(shift, hflip, mixup)} ({meta['world_size']} "
        f"process(es), {device}){val_text}",
    )
    if meta.get("float_weights"):  # --qat could not read these nodes' grids: say so, not silently
        say(
            quiet,
            f"note: --qat trained {len(meta['float_weights'])} weighted node(s) in float (no "
            f"{qat} grid found for them): {', '.join(meta['float_weights'])}",
        )
    end_worker()


def _augmented(shift: int, hflip: bool, mixup: float) -> str:
    """How the training samples were augmented, for the closing line."""
    moves = ([f"shifted by up to {shift} px"] if shift else []) + (["mirrored"] if hflip else [])
    parts = [f"{' and '.join(moves)} at random"] if moves else []
    parts += [f"blended in pairs with mixup alpha {mixup:g}"] if mixup else []
    return f" ({', '.join(parts)})" if parts else ""
