"""Mixup and CutMix: blend pairs of training images and their targets in the same proportion.

Both regularise a network that would otherwise learn from one face at a time: mixup averages
two whole faces (pixels and targets by ``lam``), CutMix pastes a box of one face into another
and mixes the targets by the box's share of the image, so every pixel still belongs to a real
face. One ``lam`` is drawn per batch from ``Beta(alpha, alpha)`` and every image is paired with
a random partner of the same batch, as timm and torchvision's reference scripts do; only a
``prob`` share of batches is mixed, so the network still sees unmixed faces, which is what it
is scored on.

The batch is mixed before it is split over ranks under torchrun, so a distributed run draws
the same pairs as one process (:func:`facegender.train.train_one_epoch`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from facegender.config import MIXES

__all__ = ["mix_batch"]


def mix_batch(
    x: torch.Tensor, targets: np.ndarray, mode: str, alpha: float, prob: float, rng
) -> tuple[torch.Tensor, np.ndarray]:
    """Mix ``N x C x H x W`` images and their float targets in ``[0, 1]``; returns new ones.

    ``mode``: ``none`` | ``mixup`` | ``cutmix``. Every draw comes from the numpy generator
    ``rng`` (the epoch's, seeded from seed and epoch), so a resumed run mixes as the
    uninterrupted one did and every rank draws the same pairs.
    """
    if mode not in MIXES:
        raise ValueError(f"unknown mix {mode!r}; choose one of {', '.join(MIXES)}")
    if mode == "none" or len(x) < 2 or rng.random() >= prob:
        return x, targets
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(x))
    if mode == "mixup":
        mixed = lam * x + (1 - lam) * x[torch.from_numpy(partner)]
    else:
        mixed, lam = _cutmix(x, partner, lam, rng)
    t = lam * targets + (1 - lam) * targets[partner]
    return mixed, t.astype(targets.dtype)


def _cutmix(x: torch.Tensor, partner: np.ndarray, lam: float, rng) -> tuple[torch.Tensor, float]:
    """Paste a box covering about ``1 - lam`` of the image from each partner; returns the images
    and ``lam`` recomputed from the box as clipped at the border."""
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    bh, bw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    left, right = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[torch.from_numpy(partner), :, top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (h * w)
