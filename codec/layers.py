"""Small building blocks of the codec: the ConvLSTM cell and convolution helpers.

Everything here is plain float arithmetic. The layers whose outputs must be
bit-exact on every machine (the entropy-parameter path) live in `codec.exact`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: the memory that carries across layers.

    The forget gate starts biased open so that early in training the cell
    keeps what earlier layers stored instead of washing it out.
    """

    def __init__(self, in_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = conv3x3(in_channels + hidden_channels, 4 * hidden_channels)
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def initial_state(self, like: Tensor) -> LSTMState:
        n, _, h, w = like.shape
        zeros = like.new_zeros(n, self.hidden_channels, h, w)
        return zeros, zeros

    def forward(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        hidden, cell = state
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, (hidden, cell)
