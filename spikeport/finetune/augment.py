"""Training-time augmentation: random translation and horizontal flip of an image input, and
mixup of any float inputs.

Fine-tuning a converted network at a few steps learns from a small labelled set for many
epochs, and it learns that set (docs/finetune.md). The standard remedy of image training
(torchvision's RandomCrop with zero padding and RandomHorizontalFlip, as SpikingJelly's and
QCFS's CIFAR recipes use them) draws a new random offset and flip for every sample of every
batch, so no two epochs see the same images. A teacher (distillation, or a source model
whose outputs are learned) is asked for its outputs on the images as augmented.

Mixup (Zhang et al. 2018) blends each sample with another of its batch, x' = lam x + (1 - lam)
x[perm], lam ~ Beta(alpha, alpha), and its label likewise. With a teacher it is the "function
matching" of Beyer et al. 2022 ("Knowledge distillation: a good teacher is patient and
consistent"): the network learns the source model's outputs on inputs between the training
samples too, where a small training set says nothing, which is what a network that learns its
training split by heart lacks. It needs no image axes: any float input blends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spikeport.errors import BadInput
from spikeport.ir.graph import Graph

Inputs = torch.Tensor | dict[str, torch.Tensor]  # a batch: one tensor, or one per model input


@dataclass(frozen=True)
class Augment:
    """Translate each image by up to `shift` pixels along each spatial axis (a uniform random
    offset in -shift..shift, the pixels moved in are 0) and mirror it left-right with
    probability 1/2 where `hflip`; the IR's images are (C, H, W) per sample. Blend pairs of
    samples where `mixup` (the alpha of Beta(alpha, alpha)) is above 0: `mix`."""

    shift: int = 0
    hflip: bool = False
    mixup: float = 0.0

    def __bool__(self) -> bool:
        return self.moves or self.mixup > 0

    @property
    def moves(self) -> bool:
        """Whether images are moved or mirrored (__call__ does something)."""
        return self.shift > 0 or self.hflip

    def check(self, graph: Graph) -> None:
        """Refuse what cannot be augmented: mixup of token ids, a move of a graph without one
        image input, or a shift that would move the whole image out (a negative value is
        Settings.check's to refuse)."""
        ids = [i for i in graph.inputs if not i.dtype.startswith("float")]
        if self.mixup > 0 and ids:
            raise BadInput(
                f"--mixup blends inputs; input '{ids[0].name}' holds {ids[0].dtype} values "
                "(token ids), which do not blend"
            )
        if not self.moves:
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

    def __call__(self, x: Inputs, gen: torch.Generator) -> Inputs:
        """A new batch (N, C, H, W): every sample moved and flipped by its own random draw
        (the batch itself where nothing moves; check() refuses moves of other inputs)."""
        if not self.moves:
            return x
        assert isinstance(x, torch.Tensor)  # one image input: check()
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

    def mix(self, x: Inputs, gen: torch.Generator) -> tuple[Inputs, torch.Tensor, torch.Tensor]:
        """Every sample i blended with sample perm[i] of the batch, weights lam[i] and
        1 - lam[i]: (the blended batch, lam (N,), perm (N,)). Every input of a dict the same."""
        n = len(next(iter(x.values())) if isinstance(x, dict) else x)
        perm = torch.randperm(n, generator=gen)
        # numpy draws the Beta variates (torch's take no generator), seeded from `gen`
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        lam = torch.from_numpy(np.random.default_rng(seed).beta(self.mixup, self.mixup, n))

        def blend(t: torch.Tensor) -> torch.Tensor:
            w = lam.to(t.device, t.dtype).reshape((n,) + (1,) * (t.ndim - 1))
            return w * t + (1 - w) * t[perm.to(t.device)]

        mixed = {k: blend(v) for k, v in x.items()} if isinstance(x, dict) else blend(x)
        return mixed, lam, perm
