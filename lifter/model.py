"""The lifter network in PyTorch (training only) and its folding into plain dense layers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lifter.tflite_writer import Dense, ResidualMLP, TemporalConv


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


class TemporalConvNet(nn.Module):
    """Causal temporal convolutions, VideoPose3D-style, for the last frame of a K-frame window.

    Pavllo et al. (2019) lift the centre frame of a window with 1-D convolutions of kernel 3 and
    dilations 1, 3, 9, ...; for one output frame the same receptive field is computed by kernel-3
    convolutions of stride 3 (their single-frame "optimised" form). Here the window holds only
    past frames and the current one, so the output (the current frame) adds no latency. Each
    level is a strided convolution (a linear layer over 3 consecutive time steps, written as a
    reshape then a linear layer so it exports as RESHAPE + FULLY_CONNECTED) and a residual 1x1
    convolution. ``frames`` = 3 ** levels (27 for 3 levels: 1 s at 27 fps).

    Args:
        levels: Convolution levels (receptive field 3 ** levels frames).
        n_features: Inputs per frame (51).
        n_out: Output width (51).
        channels: Channels of every level.
        dropout: Dropout rate after each layer.
    """

    def __init__(self, levels: int = 3, n_features: int = 51, n_out: int = 51,
                 channels: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.frames = 3 ** levels
        self.n_features = n_features
        self.convs = nn.ModuleList([nn.Linear(3 * (n_features if i == 0 else channels),
                                              channels) for i in range(levels)])
        self.conv_bns = nn.ModuleList([nn.BatchNorm1d(channels) for _ in range(levels)])
        self.mixes = nn.ModuleList([nn.Linear(channels, channels) for _ in range(levels)])
        self.mix_bns = nn.ModuleList([nn.BatchNorm1d(channels) for _ in range(levels)])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, frames * n_features), oldest frame first -> (b, n_out) metres."""
        h = x
        for conv, cbn, mix, mbn in zip(self.convs, self.conv_bns, self.mixes, self.mix_bns,
                                       strict=True):
            assert isinstance(conv, nn.Linear)
            # rows are time steps (b * t); three consecutive ones become one, as in a
            # kernel-3 stride-3 convolution over time
            h = h.reshape(-1, conv.in_features)
            h = self.drop(torch.relu(cbn(conv(h))))
            h = h + self.drop(torch.relu(mbn(mix(h))))
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


def fold(net: LifterNet | TemporalConvNet) -> ResidualMLP | TemporalConv:
    """The trained network as dense layers with batch norm folded in (eval-mode semantics)."""
    if isinstance(net, TemporalConvNet):
        levels = []
        for conv, cbn, mix, mbn in zip(net.convs, net.conv_bns, net.mixes, net.mix_bns,
                                       strict=True):
            assert isinstance(conv, nn.Linear) and isinstance(mix, nn.Linear)
            assert isinstance(cbn, nn.BatchNorm1d) and isinstance(mbn, nn.BatchNorm1d)
            levels.append((_fold(conv, cbn, True), _fold(mix, mbn, True)))
        return TemporalConv(tuple(levels), _fold(net.head, None, False))
    blocks = []
    for b in net.blocks:
        assert isinstance(b, Block)
        blocks.append((_fold(b.fc1, b.bn1, True), _fold(b.fc2, b.bn2, True)))
    return ResidualMLP(_fold(net.stem, net.bn0, True), tuple(blocks),
                       _fold(net.head, None, False))
