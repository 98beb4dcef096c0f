"""The spike function: an exact Heaviside forward and a surrogate derivative backward.

The forward compares `d = v - theta >= 0`, which is exactly the simulator's `v >= theta` (IEEE
subtraction is zero only for equal operands), so the torch module spikes when the reference
simulator does. The backward pretends the step is smooth over about one threshold around
`v = theta` (Neftci, Mostafa and Zenke 2019, "Surrogate gradient learning in spiking neural
networks"); measured in units of theta, so the same width works for every layer's scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spikeport.errors import BadInput

# Derivative of the smoothed step as a function of u = (v - theta) / theta; integrates to 1.
Shape = Callable[[torch.Tensor], torch.Tensor]


def _triangle(u: torch.Tensor) -> torch.Tensor:
    """Peak 1 at the threshold, zero one threshold away (Esser et al. 2016; Bellec et al. 2018)."""
    return (1.0 - u.abs()).clamp(min=0.0)


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    """Straight-through over v in [theta/2, 3 theta/2): a rate code's slope, 1 spike per theta."""
    return ((u >= -0.5) & (u < 0.5)).to(u.dtype)


def _atan(u: torch.Tensor) -> torch.Tensor:
    """Derivative of an arctan step (SpikingJelly's default, alpha = 2): heavy tails."""
    return 1.0 / (1.0 + (torch.pi * u) ** 2)


SURROGATES: dict[str, Shape] = {"triangle": _triangle, "rectangle": _rectangle, "atan": _atan}


class SpikeFn(torch.autograd.Function):
    """H(d) forward; h(d / theta) / theta backward (theta only sets the width, no gradient)."""

    @staticmethod
    def forward(ctx, d: torch.Tensor, theta: torch.Tensor, shape: Shape) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(d, theta)
        ctx.shape = shape
        return (d >= 0).to(d.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        d, theta = ctx.saved_tensors
        return grad * ctx.shape(d / theta) / theta, None, None


def get_surrogate(name: str) -> Shape:
    """The surrogate derivative called `name`, or BadInput listing the known ones."""
    if name not in SURROGATES:
        raise BadInput(f"surrogate '{name}' is not one of {sorted(SURROGATES)}")
    return SURROGATES[name]


def spike(d: torch.Tensor, theta: torch.Tensor, shape: Shape) -> torch.Tensor:
    """1 where d >= 0 else 0, with the surrogate derivative `shape` in the backward pass."""
    return SpikeFn.apply(d, theta.detach(), shape)
