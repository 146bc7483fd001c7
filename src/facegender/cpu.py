"""The CPU the work runs on (model, instruction flags) and how its cores are shared.

Detection (the YuNet graph on onnxruntime; libfacedetection's OpenMP with ``yunet-lib``), the
decode/detect worker processes and the classifier (onnxruntime's intra-op pool) run side by
side. Each thread pool assumes it owns the cores and spins while it waits; when pools share
cores with each other or with other processes, a frame that takes 8 ms alone took 300-900 ms
(issue 16). So the split is decided here, once:

- the detector runs **one** thread (:data:`DETECTOR_THREADS`): a 640 x 480 frame at 512 px is
  too small to gain from a team, and one thread never waits for another;
- the classifier gets the cores the worker processes leave, shared by the processes that each
  run one (:func:`classifier_threads`); ``predict --workers`` and ``serve --workers`` use it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

DETECTOR_THREADS = 1
# The flags the speed of this package depends on: AVX2/AVX-512 kernels, bf16 training, int8 dots.
FLAGS_OF_INTEREST = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, so ``taskset``/pinning is respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def classifier_threads(workers: int = 0, processes: int = 1) -> int:
    """Intra-op threads for one classifier: the cores ``workers`` decode/detect processes leave,
    split between the ``processes`` that each run a classifier (at least one thread)."""
    return max(1, (usable_cores() - max(0, int(workers))) // max(1, int(processes)))


def cpu_info(cpuinfo: str | None = None) -> dict:
    """``{"model": name, "flags": set}`` from ``/proc/cpuinfo`` text (read when None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine() or "?", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return {"model": model, "flags": flags}


def flags_of_interest(cpuinfo: str | None = None) -> dict[str, bool]:
    """Whether the CPU has each flag in :data:`FLAGS_OF_INTEREST` (for benchmark records)."""
    flags = cpu_info(cpuinfo)["flags"]
    return {f: f in flags for f in FLAGS_OF_INTEREST}
