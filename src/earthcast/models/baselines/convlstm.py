"""ConvLSTM baseline (Shi et al., NeurIPS 2015): an encoder–forecaster of stacked convolutional LSTMs.

The encoder reads the context frames through a strided-conv stem and `depth` ConvLSTM layers; the
forecaster starts from the encoder's final states and unrolls `out_len` steps, each fed with its own
previous prediction's features (no teacher forcing, so training and inference match).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from earthcast.models.base import MODELS, Forecaster, configured


class ConvLSTMCell(nn.Module):
    def __init__(self, channels_in: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(channels_in + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(Forecaster):
    def __init__(self, in_len: int, out_len: int, channels: int = 1, hidden: int = 32, depth: int = 2,
                 downsample: int = 2, kernel_size: int = 3):
        super().__init__(in_len, out_len)
        self.channels = channels
        self.downsample = downsample
        self.stem = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=downsample, stride=downsample), nn.SiLU())
        self.encoder = nn.ModuleList(ConvLSTMCell(hidden, hidden, kernel_size) for _ in range(depth))
        self.forecaster = nn.ModuleList(ConvLSTMCell(hidden, hidden, kernel_size) for _ in range(depth))
        self.head = nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden, kernel_size=downsample, stride=downsample), nn.SiLU(),
            nn.Conv2d(hidden, channels, kernel_size=1))
        self.feedback = nn.Conv2d(hidden, hidden, kernel_size=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        batch, _, height, width, _ = inputs.shape
        pad_h, pad_w = (-height) % self.downsample, (-width) % self.downsample
        frames = rearrange(inputs, "b t h w c -> b t c h w")
        frames = nn.functional.pad(frames, (0, pad_w, 0, pad_h))
        features = self.stem(rearrange(frames, "b t c h w -> (b t) c h w"))
        features = rearrange(features, "(b t) c h w -> b t c h w", b=batch)
        zeros = features.new_zeros(batch, self.encoder[0].hidden, *features.shape[-2:])
        states = [(zeros, zeros) for _ in self.encoder]
        for t in range(features.shape[1]):
            x = features[:, t]
            for layer, cell in enumerate(self.encoder):
                states[layer] = cell(x, states[layer])
                x = states[layer][0]
        outputs, x = [], states[-1][0]
        for _ in range(self.out_len):
            x = self.feedback(x)
            for layer, cell in enumerate(self.forecaster):
                states[layer] = cell(x, states[layer])
                x = states[layer][0]
            outputs.append(self.head(x)[..., :height, :width])
        return rearrange(torch.stack(outputs, dim=1), "b t c h w -> b t h w c")


MODELS.register("convlstm")(configured(ConvLSTM))
