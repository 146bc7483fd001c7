"""The few pieces of ``torch.distributed`` that training needs, so ``train.py`` stays one loop.

``torchrun --nproc_per_node N -m facegender train ...`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); :func:`from_env` turns them into a process
group (gloo on CPU, nccl on CUDA). Without them every helper here is a no-op for one process, so
the single-process path runs exactly as before.

``--batch-size`` stays the *global* batch: each step, every rank takes an interleaved slice of the
same global batch (the partition :class:`torch.utils.data.DistributedSampler` makes), so the
union of the ranks' step-``i`` batches is exactly the single-process step-``i`` batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from torch import distributed as dist

# Rank 0 decodes the data set into the cache while the others wait at a barrier: allow for a
# large data set before the collective times out (minutes, overridable).
TIMEOUT_ENV = "FACEGENDER_DIST_TIMEOUT_MIN"


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``world == 1`` means plain single-process training."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher that sets the env)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def from_env(device: str = "cpu") -> Dist:
    """Join the process group torchrun describes in the environment (one process when not
    launched).

    ``device``: ``cpu`` (gloo) or ``cuda`` (nccl, one GPU per local rank).
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but this machine has no CUDA GPU")
    if not launched():
        return Dist(device=device)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, "120"))
        kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=timedelta(minutes=minutes), **kwargs
        )
    return Dist(rank, world, local, device)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        if d.device.startswith("cuda"):
            dist.barrier(device_ids=[d.local_rank])
        else:
            dist.barrier()


def rank_slice(batch: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's share of one global batch: every ``world``-th item from ``rank`` on."""
    return batch[d.rank :: d.world] if d.enabled else batch


def check_batch(batch_size: int, d: Dist) -> None:
    if d.enabled and batch_size % d.world:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must divide evenly over "
            f"{d.world} processes (e.g. {batch_size - batch_size % d.world or d.world})"
        )


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (float64 on the wire)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Make every rank's buffers (BatchNorm running statistics) rank 0's."""
    if d.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def shard_bounds(n: int, d: Dist) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` items for this rank (sizes differ by at most one)."""
    per, extra = divmod(n, d.world)
    start = d.rank * per + min(d.rank, extra)
    return start, start + per + (d.rank < extra)


def gather_rows(part: torch.Tensor, n: int, d: Dist) -> torch.Tensor:
    """Concatenate every rank's :func:`shard_bounds` part of ``n`` rows, in rank order."""
    if not d.enabled:
        return part
    longest = -(-n // d.world)
    padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype, device=d.device)
    padded[: len(part)] = part.to(d.device)
    parts = [torch.empty_like(padded) for _ in range(d.world)]
    dist.all_gather(parts, padded)
    out = []
    for r, p in enumerate(parts):
        start, stop = shard_bounds(n, Dist(r, d.world))
        out.append(p[: stop - start])
    return torch.cat(out).cpu()
