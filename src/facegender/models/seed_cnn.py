"""The seeds' baseline: 3 conv + 3 max-pool + dense + one sigmoid output (64x64), for comparison."""

from __future__ import annotations

import torch
from torch import nn

from facegender.models.base import FaceGenderNet
from facegender.models.registry import register_model


class SeedCNN(FaceGenderNet):
    def __init__(
        self,
        image_size: int = 64,
        widths=(32, 64, 128),
        hidden: int = 128,
        dropout: float = 0.5,
        batch_norm: bool = False,
        **kw,
    ):
        super().__init__(**kw)
        layers: list[nn.Module] = []
        c = self.in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1)]
            layers += [nn.BatchNorm2d(w)] if batch_norm else []
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


@register_model
def seed_cnn(**kwargs) -> SeedCNN:
    """3x(conv3x3 + ReLU + max-pool) 32/64/128, dense 128, dropout, one logit."""
    return SeedCNN(**kwargs)


@register_model
def seed_cnn_bn(**kwargs) -> SeedCNN:
    """The Keras-style seed variant with batch normalisation after each convolution."""
    return SeedCNN(batch_norm=True, **kwargs)
