"""Shared model shell: normalisation inside the graph and optional flip test-time augmentation.

Keeping both inside the module means the exported ONNX graph and the PyTorch model compute the
same thing from the same ``[0, 1]`` RGB input, with no preprocessing copy outside.
"""

from __future__ import annotations

import torch
from torch import nn


class FaceGenderNet(nn.Module):
    def __init__(self, in_chans: int = 3, mean=None, std=None, tta_flip: bool = False):
        super().__init__()
        mean = mean if mean is not None else [0.5] * in_chans
        std = std if std is not None else [0.25] * in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.in_chans = in_chans
        self.tta_flip = tta_flip

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        logits = self.forward_logits(x)
        if self.tta_flip and not self.training:
            logits = 0.5 * (logits + self.forward_logits(torch.flip(x, dims=[3])))
        return logits
