"""Training-time augmentation of an image input: random translation and horizontal flip.

Fine-tuning a converted network at a few steps learns from a small labelled set for many
epochs, and it learns that set (docs/finetune.md). The standard remedy of image training
(torchvision's RandomCrop with zero padding and RandomHorizontalFlip, as SpikingJelly's and
QCFS's CIFAR recipes use them) draws a new random offset and flip for every sample of every
batch, so no two epochs see the same images. A teacher (distillation, or a source model
whose outputs are learned) is asked for its outputs on the images as augmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeport.errors import BadInput
from spikeport.ir.graph import Graph


@dataclass(frozen=True)
class Augment:
    """Translate each image by up to `shift` pixels along each spatial axis (a uniform random
    offset in -shift..shift, the pixels moved in are 0) and mirror it left-right with
    probability 1/2 where `hflip`; the IR's images are (C, H, W) per sample."""

    shift: int = 0
    hflip: bool = False

    def __bool__(self) -> bool:
        return self.shift > 0 or self.hflip

    def check(self, graph: Graph) -> None:
        """Refuse what cannot be augmented: a graph without one image input, or a shift that
        would move the whole image out (a negative one is Settings.check's to refuse)."""
        if not self:
            return
        if len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 3:
            shapes = ", ".join(f"'{i.name}' {tuple(i.shape)}" for i in graph.inputs)
            raise BadInput(
                f"--shift and --hflip augment one image input (C, H, W); this graph's "
                f"inputs are {shapes}"
            )
        _, h, w = graph.inputs[0].shape
        if self.shift >= min(h, w):
            raise BadInput(f"--shift {self.shift} moves a {h}x{w} image out of its frame")

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A new batch (N, C, H, W): every sample moved and flipped by its own random draw."""
        n, _, h, w = x.shape
        k = self.shift
        if k:
            padded = torch.nn.functional.pad(x, (k, k, k, k))
            dy, dx = (torch.randint(0, 2 * k + 1, (n,), generator=gen) for _ in range(2))
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
            batch = torch.arange(n)[:, None, None, None]
            chans = torch.arange(x.shape[1])[None, :, None, None]
            x = padded[batch, chans, rows.to(x.device), cols.to(x.device)]
        if self.hflip:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x
