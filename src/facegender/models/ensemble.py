"""Several trained models as one module: the mean of their temperature-scaled logits.

Why a module and not a loop at prediction time: exported, it is one ONNX graph with one input
and one output, so ``--model accurate`` stays a single file that every backend, the web service
and the ONNX runtime load like any other graph, and quantisation calibrates it as a whole.
Each member keeps its own normalisation, flip TTA and age-class scales inside its ``forward``;
dividing by each member's fitted temperature first puts their logits on one scale, so a
member that happens to be more confident does not outvote the others.
"""

from __future__ import annotations

import torch
from torch import nn

from facegender.preprocess import PreprocessConfig


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], temperatures: list[float]):
        super().__init__()
        if len(members) != len(temperatures) or not members:
            raise ValueError("an ensemble needs one temperature per member, and a member")
        self.members = nn.ModuleList(members)
        self.register_buffer("inv_t", torch.tensor([1.0 / t for t in temperatures]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.stack([m(x) * self.inv_t[i] for i, m in enumerate(self.members)])
        return z.mean(dim=0)


def same_input(configs: list[dict]) -> None:
    """Refuse members that need different input (size, crop, colour): one graph has one input,
    so the ensemble's members must all be fed the very same preprocessed faces."""

    def key(config: dict) -> tuple:  # normalisation is inside each member, so not compared
        pre = PreprocessConfig.from_dict(config["preprocess"])
        return pre.image_size, pre.crop, pre.grayscale

    for i, c in enumerate(configs[1:], 1):
        if key(c) != key(configs[0]):
            raise ValueError(
                f"ensemble member {i} takes other input (size, crop, grayscale {key(c)}) "
                f"than the first ({key(configs[0])})"
            )
