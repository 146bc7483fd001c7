"""Decode every sample once into a ``uint8`` array on disk, so later epochs skip JPEG decoding.

The cache key covers the file list (path, size, mtime), the preprocessing config and the face
crop. Where the mtimes changed but the bytes did not (a data set copied without ``-t``, a
re-mounted volume, a fresh checkout), a second key over the files' contents finds the arrays
again: the miss costs one read of every file (seconds) instead of a decode (minutes).
Decoding also finds the bad files a name cannot reveal: truncated, not an image, duplicate
content. Arrays are plain ``.npy`` (loaded with ``allow_pickle=False``) plus a JSON index.

``face_crop="own"`` keeps each data set's own crop (the centred square of the file).
``face_crop="aligned"`` sends every image through ``predict``'s own detector and
:mod:`facegender.align`, so the model trains (or is scored) on the crops it gets from photos. The
face taken is the largest one centred in the image; an image where none is found keeps its own
crop and is listed in ``DataSet.no_face``.
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

from facegender.config import CROPS
from facegender.data.samples import DataSet, Sample, Skipped
from facegender.preprocess import ImageDecodeError, PreprocessConfig, load_face

CACHE_VERSION = 1
_CROPPERS: dict[str, object] = {}  # one FaceCropper (and detector) per worker process


def default_cache_dir() -> Path:
    env = os.environ.get("FACEGENDER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facegender"


def _decode_one(args: tuple) -> tuple[np.ndarray | None, str | None, str | None, bool]:
    """``(array, sha1, error, face_found)`` for one file; ``face_found`` is True for own crops."""
    path, cfg_dict, face_crop = args
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}", False
    cfg = PreprocessConfig.from_dict(cfg_dict)
    try:
        arr = _aligned(raw, cfg) if face_crop == "aligned" else None
        found = arr is not None or face_crop == "own"
        if arr is None:
            arr = load_face(raw, cfg)
    except ImageDecodeError as e:
        return None, None, str(e), False
    return arr, hashlib.sha1(raw).hexdigest(), None, found


def _aligned(raw: bytes, cfg: PreprocessConfig) -> np.ndarray | None:
    """predict's crop of the image's subject face, or None where no face is found."""
    from facegender.predict import FaceCropper

    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _CROPPERS:  # one detector thread: the pool's processes fill the cores
        _CROPPERS[key] = FaceCropper(cfg, detector_kwargs={"threads": 1})
    crops = _CROPPERS[key](raw)
    if crops.status == "error":
        raise ImageDecodeError(crops.error, crops.error_code)
    i = subject_index(crops.boxes, crops.width or 0, crops.height or 0)
    return None if i is None else crops.arrays[i]


def subject_index(boxes: list[list[int]], width: int, height: int) -> int | None:
    """The face a data-set crop is about: the largest box whose centre is in the middle half."""
    best, best_area = None, 0
    for i, (x, y, w, h) in enumerate(boxes):
        centred = (
            abs(x + w / 2 - width / 2) <= width / 4 and abs(y + h / 2 - height / 2) <= height / 4
        )
        if centred and w * h > best_area:
            best, best_area = i, w * h
    return best


def decode_key(samples: list[Sample], cfg: PreprocessConfig, face_crop: str) -> str:
    """What a decoded array depends on: the files (path, size, mtime), preprocessing, crop."""
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    if face_crop != "own":  # own crops keep the keys of caches made before face_crop existed
        h.update(face_crop.encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            h.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{s.path}|missing\n".encode())
    return h.hexdigest()[:20]


def content_key(samples: list[Sample], cfg: PreprocessConfig, face_crop: str) -> str:
    """:func:`decode_key` with each file's bytes in place of its size and mtime."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|content".encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(face_crop.encode())
    for s in samples:
        try:
            digest = hashlib.sha1(Path(s.path).read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        h.update(f"{s.path}|{digest}\n".encode())
    return h.hexdigest()[:20]


def _lookup(
    cache_dir: Path, key: str, samples: list[Sample], cfg: PreprocessConfig, face_crop: str
) -> tuple[tuple[np.ndarray, dict] | None, str | None]:
    """``(cached (arrays, index) or None, content key or None)``: by file stats first (an alias,
    or a cache written before content keys), then by content, read only where a cache exists."""
    alias = cache_dir / f"{key}.alias"
    for k in (key, alias.read_text().strip() if alias.exists() else None):
        if k and (hit := _read(cache_dir, k)) is not None:
            if k == key:  # written before content keys: rename it to one, for the next mount
                content = content_key(samples, cfg, face_crop)
                for ext in ("npy", "json"):
                    os.replace(cache_dir / f"{key}.{ext}", cache_dir / f"{content}.{ext}")
                _alias(cache_dir, key, content)
            return hit, None
    if not any(cache_dir.glob("*.npy")):
        return None, None  # nothing to find by content: skip reading every file
    content = content_key(samples, cfg, face_crop)
    hit = _read(cache_dir, content)
    if hit is not None:
        _alias(cache_dir, key, content)
    return hit, content


def _read(cache_dir: Path, key: str) -> tuple[np.ndarray, dict] | None:
    npy, idx = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not (npy.exists() and idx.exists()):
        return None
    return np.load(npy, mmap_mode="r", allow_pickle=False), json.loads(idx.read_text())


def _alias(cache_dir: Path, key: str, content: str) -> None:
    """Point the stats key at the content key's arrays, so the next run skips the reading."""
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp"
    tmp.write_text(content)
    os.replace(tmp, cache_dir / f"{key}.alias")


def decode_dataset(
    data: DataSet,
    cfg: PreprocessConfig,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    face_crop: str = "own",
) -> tuple[np.ndarray, DataSet]:
    """Return ``(arrays, kept)``: arrays ``N x S x S x C`` for the samples that decoded.

    ``kept.skipped`` is ``data.skipped`` plus the files that failed to decode or repeat an
    earlier file's bytes; the same files are kept for either ``face_crop``, in the same order.
    With ``cache_dir`` set, the result is stored and reused.
    """
    if face_crop not in CROPS:
        raise ValueError(f"unknown face_crop {face_crop!r}; use one of {', '.join(CROPS)}")
    samples = data.samples
    key = decode_key(samples, cfg, face_crop)
    hit, content = None, None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        hit, content = _lookup(cache_dir, key, samples, cfg, face_crop)
    if hit is not None:
        arrays, meta = hit
    else:
        arrays, meta = _decode_all(samples, cfg, workers, progress, face_crop)
        if cache_dir is not None:
            content = content or content_key(samples, cfg, face_crop)
            _store(cache_dir / f"{content}.npy", cache_dir / f"{content}.json", arrays, meta)
            _alias(cache_dir, key, content)
    kept = DataSet([samples[i] for i in meta["kept"]], list(data.skipped))
    kept.skipped += [Skipped(**d) for d in meta["skipped"]]
    kept.no_face = [samples[i].path for i in meta.get("no_face", [])]  # caches before it
    return arrays, kept


def _decode_all(
    samples: list[Sample], cfg: PreprocessConfig, workers: int | None, progress: bool, crop: str
) -> tuple[np.ndarray, dict]:
    """Decode every file (in worker processes): ``(arrays, index)``, the index as cached."""
    s = cfg.image_size
    arrays = np.zeros((len(samples), s, s, cfg.channels), dtype=np.uint8)
    kept: list[int] = []
    no_face: list[int] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(smp.path, cfg.to_dict(), crop) for smp in samples]
    # fork, as for own crops: the parent never runs the detector, so its OpenMP starts fresh
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) >= 64 else None
    results = pool.map(_decode_one, jobs, chunksize=64) if pool else map(_decode_one, jobs)
    try:
        desc = "decode" if crop == "own" else "detect + align"
        bar = tqdm(results, total=len(jobs), desc=desc, unit="img", disable=not progress)
        for i, (arr, digest, err, found) in enumerate(bar):
            if err is not None:
                skipped.append(Skipped(samples[i].path, err))
                continue
            if digest in seen:
                skipped.append(Skipped(samples[i].path, f"duplicate content of {seen[digest]}"))
                continue
            seen[digest] = samples[i].path
            arrays[len(kept)] = arr
            if not found:
                no_face.append(i)
            kept.append(i)
    finally:
        if pool:
            pool.shutdown()
    meta = {"kept": kept, "skipped": [asdict(x) for x in skipped], "no_face": no_face}
    return arrays[: len(kept)], meta


def _store(npy: Path, idx: Path, arrays: np.ndarray, meta: dict) -> None:
    """Write the array, then the index that vouches for it, each through a temporary file.

    The temporary names carry the process id: two runs started side by side on the same data
    both build the cache, and with one shared name the slower one's rename found its file gone.
    """
    npy.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"
    tmp_npy, tmp_idx = npy.with_suffix(f".{tag}.npy"), idx.with_suffix(f".{tag}.json")
    np.save(tmp_npy, arrays, allow_pickle=False)
    os.replace(tmp_npy, npy)
    tmp_idx.write_text(json.dumps(meta))
    os.replace(tmp_idx, idx)
