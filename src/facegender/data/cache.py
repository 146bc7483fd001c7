"""Decode every sample once into a ``uint8`` array on disk, so later epochs skip JPEG decoding.

The cache key covers the file list (path, size, mtime) and the preprocessing config. Decoding also
finds the bad files a name cannot reveal: truncated, not an image, duplicate content. Arrays are
plain ``.npy`` (loaded with ``allow_pickle=False``) plus a JSON index.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegender.data.samples import DataSet, Sample, Skipped
from facegender.preprocess import ImageDecodeError, PreprocessConfig, load_face

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("FACEGENDER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facegender"


def _decode_one(args: tuple[str, dict]) -> tuple[np.ndarray | None, str | None, str | None]:
    path, cfg_dict = args
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}"
    try:
        arr = load_face(raw, PreprocessConfig.from_dict(cfg_dict))
    except ImageDecodeError as e:
        return None, None, str(e)
    return arr, hashlib.sha1(raw).hexdigest(), None


def _key(samples: list[Sample], cfg: PreprocessConfig) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            h.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{s.path}|missing\n".encode())
    return h.hexdigest()[:20]


def decode_dataset(
    data: DataSet,
    cfg: PreprocessConfig,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, DataSet]:
    """Return ``(arrays, kept)``: arrays ``N x S x S x C`` for the samples that decoded.

    ``kept.skipped`` is ``data.skipped`` plus the files that failed to decode or repeat an
    earlier file's bytes. With ``cache_dir`` set, the result is stored and reused.
    """
    samples = data.samples
    key = _key(samples, cfg)
    if cache_dir is not None:
        npy, idx = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        if npy.exists() and idx.exists():
            meta = json.loads(idx.read_text())
            kept = DataSet([samples[i] for i in meta["kept"]], list(data.skipped))
            kept.skipped += [Skipped(**d) for d in meta["skipped"]]
            return np.load(npy, mmap_mode="r", allow_pickle=False), kept

    s = cfg.image_size
    arrays = np.zeros((len(samples), s, s, cfg.channels), dtype=np.uint8)
    kept_idx: list[int] = []
    new_skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(smp.path, cfg.to_dict()) for smp in samples]
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) >= 64 else None
    results = pool.map(_decode_one, jobs, chunksize=64) if pool else map(_decode_one, jobs)
    try:
        bar = tqdm(results, total=len(jobs), desc="decode", unit="img", disable=not progress)
        for i, (arr, digest, err) in enumerate(bar):
            if err is not None:
                new_skipped.append(Skipped(samples[i].path, err))
                continue
            if digest in seen:
                new_skipped.append(Skipped(samples[i].path, f"duplicate content of {seen[digest]}"))
                continue
            seen[digest] = samples[i].path
            arrays[len(kept_idx)] = arr
            kept_idx.append(i)
    finally:
        if pool:
            pool.shutdown()
    arrays = arrays[: len(kept_idx)]
    kept = DataSet([samples[i] for i in kept_idx], list(data.skipped) + new_skipped)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = npy.with_suffix(".tmp.npy")
        np.save(tmp, arrays, allow_pickle=False)
        os.replace(tmp, npy)
        idx.write_text(json.dumps({"kept": kept_idx, "skipped": [asdict(x) for x in new_skipped]}))
    return arrays, kept
