"""The decoder-side post-filter: removes block edges from the picture shown.

The running reconstruction of the residual coder stays as it is (the next
layer codes the residual against it, so the bitstream does not depend on this
filter). Only the picture handed to the viewer passes through a small
convolutional network, trained on the frozen codec, that knows which layer
it is looking at and where the transform's block edges are. It runs at half
resolution on 2x2 pixel groups, so it sees a 16x16 block edge with 8 pixels
on either side for about 7,500 multiply-accumulates per pixel (6,500 when the
block-grid input is folded into a bias, as the browser does).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec.transforms import BLOCK

GROUP = 2  # pixels per side folded into channels
# The transform's block grid at the filter's resolution: the filter is told
# where each pixel sits in its 16x16 block, so it knows where the edges are.
PHASES = BLOCK // GROUP


class PostFilter(nn.Module):
    """Reconstruction after layer k (N, 3, H, W), H and W even, to the shown picture."""

    def __init__(self, layers: int, channels: int, depth: int = 3) -> None:
        super().__init__()
        folded = 3 * GROUP * GROUP
        self.head = nn.Conv2d(folded + 2 * PHASES, channels, 3, padding=1)
        self.layer_bias = nn.Parameter(torch.zeros(layers, channels))
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth - 1))
        self.tail = nn.Conv2d(channels, folded, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def reach(self) -> int:
        """How many pixels away an input pixel can change an output pixel: one folded position per
        3x3 convolution, and the rest of the 2x2 group."""
        convolutions = len(self.body) + 2
        return convolutions * GROUP + GROUP - 1

    def pass_through_(self, index: int) -> None:
        """Make body convolution `index` the identity, so that a filter deepened from a trained one starts
        as that filter: its input is a ReLU's output, which the identity and the next ReLU leave as it is."""
        conv = self.body[index]
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = torch.eye(conv.out_channels)
            conv.bias.zero_()

    def forward(self, reconstruction: Tensor, layer: int) -> Tensor:
        """`layer` counts from 0: the filter of the picture after layer `layer + 1`."""
        x = F.pixel_unshuffle(reconstruction, GROUP)
        x = torch.cat([x, block_phase(x)], dim=1)
        features = F.relu(self.head(x) + self.layer_bias[layer][None, :, None, None])
        for conv in self.body:
            features = F.relu(conv(features))
        return reconstruction + F.pixel_shuffle(self.tail(features), GROUP)


def block_phase(folded: Tensor) -> Tensor:
    """One-hot row and column position inside the block grid, shaped like `folded` (N, 2*PHASES, h, w).

    Tiles and the decoder's filter windows (codec.filter_windows) start at
    multiples of the block size, so the phase is that of the whole picture.
    """
    n, _, height, width = folded.shape
    rows = F.one_hot(torch.arange(height, device=folded.device) % PHASES, PHASES).t()[:, :, None]
    columns = F.one_hot(torch.arange(width, device=folded.device) % PHASES, PHASES).t()[:, None, :]
    phase = torch.cat([rows.expand(-1, -1, width), columns.expand(-1, height, -1)]).to(folded.dtype)
    return phase[None].expand(n, -1, -1, -1)
