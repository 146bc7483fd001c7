"""Batch augmentation on tensors: one random affine warp (flip, rotation, shift, shear, zoom) per
image through ``affine_grid``/``grid_sample``, then brightness/contrast jitter and random erasing.

Working on whole batches keeps augmentation a few percent of a CPU training step, where per-image
PIL transforms would cost more than the network.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from facegender.config import AugmentConfig

__all__ = ["AugmentConfig", "augment_batch"]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment ``N x C x H x W`` floats in ``[0, 1]``; returns a new tensor in ``[0, 1]``."""
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < cfg.flip
    if cfg.any_geometry:
        rot = _uniform(n, -cfg.rotation, cfg.rotation, g) * (math.pi / 180)
        shear = _uniform(n, -cfg.shear, cfg.shear, g) * (math.pi / 180)
        scale = 1.0 / _uniform(n, 1 - cfg.zoom, 1 + cfg.zoom, g)  # >1 zooms out
        tx, ty = (_uniform(n, -cfg.shift, cfg.shift, g) * 2 for _ in range(2))
        cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(shear)
        sx = torch.where(flip, -scale, scale)
        theta = torch.zeros(n, 2, 3)
        # output -> input sampling: rotation @ shear @ scale (flip folded into the x scale)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = (cos * tan - sin) * scale
        theta[:, 1, 0] = sin * sx
        theta[:, 1, 1] = (sin * tan + cos) * scale
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif flip.any():
        x = x.clone()
        x[flip] = torch.flip(x[flip], dims=[3])
    if cfg.brightness or cfg.contrast:
        b = 1 + _uniform(n, -cfg.brightness, cfg.brightness, g).view(n, 1, 1, 1)
        c = 1 + _uniform(n, -cfg.contrast, cfg.contrast, g).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * c + mean) * b
    if cfg.erase:
        x = _erase(x, cfg.erase, g)
    return x.clamp_(0, 1)


def _erase(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    x = x.clone()
    hit = (torch.rand(n, generator=g) < p).nonzero().flatten().tolist()
    for i in hit:
        eh = int(h * float(_uniform(1, 0.15, 0.4, g)))
        ew = int(w * float(_uniform(1, 0.15, 0.4, g)))
        top = int(torch.randint(0, h - eh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - ew + 1, (1,), generator=g))
        x[i, :, top : top + eh, left : left + ew] = torch.rand(x.shape[1], 1, 1, generator=g)
    return x
