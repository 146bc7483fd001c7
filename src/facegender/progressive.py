"""Progressive resizing: the first epochs learn from smaller inputs, the last ones at full size.

A convolution's cost grows with the pixels, so an epoch at 48 px costs about 0.6 of one at 64 px
in float32 (``benchmarks/train_step.py --sizes 48 56 64``). Coarse faces early and full-size
faces for the last quarter keep what the model learns while the whole run costs less: what
matters on CPUs without fast bfloat16, where the recipe's training time is longest. The model
ends and is validated, calibrated and exported at ``image_size``; only the training batches
shrink. Sizes move in steps of ``STEP`` px, so an epoch has one size and the convolutions see
few distinct shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STEP = 8  # px between sizes


def size_at(epoch: int, epochs: int, image_size: int, start: int, until: float) -> int:
    """The training input side of ``epoch`` (0-based).

    ``start``: the side of the first epoch (0: progressive resizing off); it grows linearly to
    ``image_size`` at ``until`` of the epochs and stays there, rounded down to a multiple of
    ``STEP`` on the way (never below ``start``). The last epoch is always at full size, so the
    weights a run ends with have learnt from the inputs they are scored on.
    """
    if not start or start >= image_size:
        return image_size
    full = min(epochs - 1, round(until * epochs))
    if epoch >= full:
        return image_size
    side = start + (image_size - start) * epoch / full
    return max(start, int(side) // STEP * STEP)


def resize_batch(x: torch.Tensor, side: int) -> torch.Tensor:
    """``x`` (N x C x H x W) resized to ``side`` px with an antialiased bilinear filter: what
    a smaller photo of the same crop looks like. Unchanged when it already has that size."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
