"""Shared model shell: normalisation inside the graph and optional flip test-time augmentation.

Keeping both inside the module means the exported ONNX graph and the PyTorch model compute the
same thing from the same ``[0, 1]`` RGB input, with no preprocessing copy outside.
"""

from __future__ import annotations

import torch
from torch import nn


class FaceGenderNet(nn.Module):
    # True where the network pools globally, so it takes any input side (what
    # --progressive-size trains with); False where a layer is sized for image_size
    any_size: bool = False

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

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The gender logits and the auxiliary age head's logits (None: the model has none)."""
        return self.forward_logits(x), None

    def forward(self, x: torch.Tensor, aux: bool = False):
        """``N`` logits for P(female); ``aux=True``: ``(logits, age logits or None)``, which
        training calls so the age head's loss goes through the same (DDP-wrapped) call."""
        x = (x - self.mean) / self.std
        logits, age = self.forward_heads(x)
        if self.tta_flip and not self.training:
            flipped, age_flipped = self.forward_heads(torch.flip(x, dims=[3]))
            logits = 0.5 * (logits + flipped)
            age = None if age is None else 0.5 * (age + age_flipped)
        return (logits, age) if aux else logits
