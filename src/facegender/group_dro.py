"""Group DRO (``--group-dro ETA``): weigh each group's training loss by how badly it is doing.

The plain loss is a mean over images, so a group that is hard but no rarer than the others
(FairFace's Black women, about 1 in 14 of its faces) counts no more while the model is still
wrong on it, and resampling by size (``--balance``) cannot tell hard from rare. Group DRO
(Sagawa et al., 2020, "Distributionally Robust Neural Networks") keeps one weight ``q`` per
group, raises it each step by ``exp(eta * group loss)`` and minimises the ``q``-weighted mean of
the group losses, so the worst groups on the *training* data pull hardest. No held-out face is
looked at. The weights compound over steps: ``eta * steps * (loss gap)`` is the log of how far
a group's weight moves, so a long run wants a small ``eta``.

Groups are source x race x gender (a source without race labels: source x gender). ``q`` lives
in the resume state, so an interrupted run continues with the weights it had.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

GENDER = ("male", "female")


def group_key(sample) -> str:
    """A sample's group name: ``source/race/gender``, or ``source/gender`` without a race."""
    parts = [sample.source, sample.race, GENDER[int(sample.label)]]
    return "/".join(p for p in parts if p)


def group_ids(samples) -> tuple[np.ndarray, list[str]]:
    """Each sample's group index and the sorted group names the indices refer to."""
    keys = [group_key(s) for s in samples]
    names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    return np.array([index[k] for k in keys], dtype=np.int64), names


class GroupDRO:
    """The online group weights and the loss they define.

    ``prior``: each group's share of the training draw (after ``--balance``); ``q`` starts there,
    so at first, and always with ``eta = 0``, the loss is the plain mean over the batch, and the
    update only moves weight towards the groups that stay hard. ``eta``: the step size of the
    exponentiated update (Sagawa et al. use 0.01). ``world``: processes under torchrun; their
    group losses are summed before the update, so every rank holds the same ``q``.
    """

    def __init__(self, names: list[str], prior: np.ndarray, eta: float, world: int = 1):
        prior = torch.as_tensor(np.asarray(prior, dtype=np.float64))
        if prior.shape != (len(names),) or not (prior > 0).all():
            raise ValueError("group DRO needs a positive prior share for every group")
        self.names, self.eta, self.world = list(names), float(eta), int(world)
        self.prior = prior / prior.sum()
        self.q = self.prior.clone()

    def loss(self, losses: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
        """Update ``q`` from this batch's per-image ``losses`` (one per entry of ``groups``) and
        return their mean, each image weighed by ``q / prior`` of its group.

        Only the groups present in the batch move, by their mean loss in it.
        """
        gid = torch.from_numpy(np.asarray(groups, dtype=np.int64)).to(losses.device)
        stats = torch.zeros(2, len(self.names), dtype=torch.float64, device=losses.device)
        stats[0].index_add_(0, gid, losses.detach().double())
        stats[1].index_add_(0, gid, torch.ones_like(gid, dtype=torch.float64))
        if self.world > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        sums, counts = stats.cpu()
        present = counts > 0
        self.q[present] *= torch.exp(self.eta * sums[present] / counts[present])
        self.q /= self.q.sum()
        ratio = self.q / self.prior
        ratio = (ratio / (counts * ratio).sum()).to(losses.device, losses.dtype)
        # a sum over this rank's images; DDP averages gradients over ranks, hence * world
        return (ratio[gid] * losses).sum() * self.world

    def heaviest(self, k: int = 3) -> str:
        """The ``k`` groups whose weight grew most over their prior share, with that ratio
        (``"fairface/Black/female x1.42, ..."``), for the epoch's history row."""
        ratio = self.q / self.prior
        top = torch.argsort(ratio, descending=True)[:k].tolist()
        return ", ".join(f"{self.names[i]} x{float(ratio[i]):.2f}" for i in top)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors the resume state keeps."""
        return {"dro.q": self.q.clone()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore ``q`` from a resume state written by :meth:`state` over the same groups."""
        q = tensors.get("dro.q")
        if q is None or q.shape != self.q.shape:
            raise ValueError(
                "--resume: the saved state has no group weights for these "
                f"{len(self.names)} groups; resume with the options the run started with"
            )
        self.q = q.to(torch.float64).clone()


def prior_shares(ids: np.ndarray, n_groups: int, draw: np.ndarray | None) -> np.ndarray:
    """Each group's expected share of an epoch's draw: its images' draw probabilities summed
    (``--balance``), or its share of the images for a plain shuffle."""
    w = np.ones(len(ids)) if draw is None else np.asarray(draw, dtype=np.float64)
    return np.bincount(ids, weights=w, minlength=n_groups) / w.sum()
