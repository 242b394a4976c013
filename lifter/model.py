"""The lifter network in PyTorch (training only) and its folding into plain dense layers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lifter.tflite_writer import Dense, ResidualMLP


class Block(nn.Module):
    """Martinez et al. (2017) residual block: 2 x (linear, batch norm, ReLU), plus the input."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(width, width), nn.BatchNorm1d(width)
        self.fc2, self.bn2 = nn.Linear(width, width), nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, width) -> (b, width)."""
        y = self.drop(torch.relu(self.bn1(self.fc1(x))))
        y = self.drop(torch.relu(self.bn2(self.fc2(y))))
        out: torch.Tensor = x + y
        return out


class LifterNet(nn.Module):
    """Residual MLP: (b, frames * 51) normalised 2D -> (b, 51) metres (17 x 3).

    Args:
        n_in: Input width (51 per frame).
        n_out: Output width (51).
        width: Hidden width.
        blocks: Number of residual blocks.
        dropout: Dropout rate inside the blocks.
    """

    def __init__(self, n_in: int, n_out: int = 51, width: int = 512, blocks: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Linear(n_in, width), nn.BatchNorm1d(width)
        self.blocks = nn.ModuleList([Block(width, dropout) for _ in range(blocks)])
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_in) -> (b, n_out) metres."""
        h = torch.relu(self.bn0(self.stem(x)))
        for b in self.blocks:
            h = b(h)
        out: torch.Tensor = self.head(h)
        return out


def _fold(fc: nn.Linear, bn: nn.BatchNorm1d | None, relu: bool) -> Dense:
    w = fc.weight.detach().double().numpy()
    b = fc.bias.detach().double().numpy()
    if bn is not None:
        assert bn.running_mean is not None and bn.running_var is not None
        s = bn.weight.detach().double().numpy() / np.sqrt(
            bn.running_var.double().numpy() + bn.eps)
        w = w * s[:, None]
        b = (b - bn.running_mean.double().numpy()) * s + bn.bias.detach().double().numpy()
    return Dense(w.astype(np.float32), b.astype(np.float32), relu)


def fold(net: LifterNet) -> ResidualMLP:
    """The trained network as dense layers with batch norm folded in (eval-mode semantics)."""
    blocks = []
    for b in net.blocks:
        assert isinstance(b, Block)
        blocks.append((_fold(b.fc1, b.bn1, True), _fold(b.fc2, b.bn2, True)))
    return ResidualMLP(_fold(net.stem, net.bn0, True), tuple(blocks),
                       _fold(net.head, None, False))
