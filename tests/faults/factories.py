"""``--model tests.faults.factories:NAME`` targets that misbehave in one way each (3-class data, 32 px)."""

from __future__ import annotations

import sys

import torch
from torch import nn


class _Net(nn.Module):
    """A tiny convnet; ``out`` maps its (N, K) logits to what the faulty model returns."""

    def __init__(self, num_classes: int = 3, out=lambda z: z) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, num_classes)
        self.out = out

    def forward(self, x: torch.Tensor):
        return self.out(self.fc(self.conv(x).mean((2, 3))))


def ten_logits(num_classes: int) -> nn.Module:
    return _Net(10)


def logits_tuple(num_classes: int) -> nn.Module:
    return _Net(num_classes, lambda z: (z, z))


def logits_flat(num_classes: int) -> nn.Module:
    return _Net(num_classes, lambda z: z.flatten())


def logits_nan(num_classes: int) -> nn.Module:
    return _Net(num_classes, lambda z: z * float("nan"))


def logits_int(num_classes: int) -> nn.Module:
    return _Net(num_classes, lambda z: z.long())


def one_channel(num_classes: int) -> nn.Module:
    net = _Net(num_classes)
    net.conv = nn.Conv2d(1, 4, 3)
    return net


def raises(num_classes: int) -> nn.Module:
    raise RuntimeError("no weights here")


def exits(num_classes: int) -> nn.Module:
    sys.exit(0)


def not_a_module(num_classes: int) -> int:
    return 42


NOT_CALLABLE = 3
