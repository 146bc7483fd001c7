"""Distillation: soft targets from trained teachers (``train --teacher DIR [--teacher DIR2]``).

Each teacher scores every decoded image once, un-augmented, in every face-crop view the run
trains on, and an image's training target becomes
``(1 - distill) * its smoothed label + distill * the teachers' mean calibrated P(female)``
for the view drawn. The pass is done once, before the first epoch: on the 2-core CPU it costs
minutes, where scoring each augmented batch would add a teacher forward pass to every step.

A teacher is a checkpoint folder, or a folder of probabilities that some other model gave
(``probabilities.csv``: ``path,p_female``, one row per image of the run, beside the
``validation.csv`` of the images it never fitted on). The second kind lets a model that cannot be
bundled, too big or too slow, teach one that can: ``recipes/dlib_teacher.py`` writes one from
dlib's face-recognition descriptors. A file teacher gives each image one probability for
every view.

Two things are checked before any image is scored, because both would silently spoil a run:

- the teachers' preprocessing must be the run's, since the run's decoded arrays are their input;
- a teacher must not have trained on the run's validation images. Its soft targets carry what it
  learnt from them, so the run's validation figures would no longer be held out. A teacher's
  ``validation.csv`` (every training run writes one) must list all of them; a checkpoint that
  does not record its split is refused unless it is the bundled model, which the project trains
  on its own split and so never on a user's photos.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from facegender.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model, read_config, write_json
from facegender.model_ref import BUNDLED, resolve_model
from facegender.preprocess import PreprocessConfig, probability, to_batch

VALIDATION_FILE = "validation.csv"
PROBABILITIES_FILE = "probabilities.csv"
CACHE_FILE, CACHE_KEY_FILE = "teachers.npy", "teachers.json"


def teacher_dir(teacher: str) -> Path:
    """The checkpoint folder a ``--teacher`` names (a bundled name: the packaged weights)."""
    return resolve_model(teacher).checkpoint_dir()


def held_out_files(run_dir: Path) -> set[str] | None:
    """The image paths of a run's validation split (its ``validation.csv``), None if absent."""
    path = run_dir / VALIDATION_FILE
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        return {str(Path(row["path"]).resolve()) for row in csv.DictReader(f)}


def is_file_teacher(d: Path) -> bool:
    """Whether a teacher folder holds probabilities (``probabilities.csv``), not a model."""
    return (d / PROBABILITIES_FILE).is_file() and not (d / WEIGHTS_FILE).is_file()


def check_teacher(teacher: str, pre: PreprocessConfig, val_files: list[str]) -> Path:
    """The teacher's folder, or ``ValueError`` when it cannot teach this run (see module doc)."""
    d = Path(teacher) if is_file_teacher(Path(teacher)) else teacher_dir(teacher)
    theirs = pre if is_file_teacher(d) else PreprocessConfig.from_dict(read_config(d)["preprocess"])
    if theirs != pre:
        raise ValueError(
            f"--teacher {teacher}: its preprocessing ({theirs}) differs from this run's ({pre}); "
            "a teacher scores the run's decoded images, so both must match"
        )
    held = held_out_files(d)
    if held is None:
        if teacher in BUNDLED:
            return d
        raise ValueError(
            f"--teacher {teacher}: no {VALIDATION_FILE} says which images it never trained on, "
            "so it may have trained on this run's validation split"
        )
    seen = [p for p in val_files if str(Path(p).resolve()) not in held]
    if seen:
        raise ValueError(
            f"--teacher {teacher} trained on {len(seen)} of this run's {len(val_files)} "
            f"validation images (e.g. {seen[0]}); distil only from teachers whose validation "
            "split contains this run's (same data, --seed and --val-split)"
        )
    return d


def file_probabilities(d: Path, paths: list[str]) -> np.ndarray:
    """A file teacher's P(female) of each of ``paths``; ``ValueError`` naming a missing one."""
    with (d / PROBABILITIES_FILE).open(newline="", encoding="utf-8") as f:
        given = {str(Path(r["path"]).resolve()): float(r["p_female"]) for r in csv.DictReader(f)}
    keys = [str(Path(p).resolve()) for p in paths]
    missing = [p for p, k in zip(paths, keys, strict=True) if k not in given]
    if missing:
        raise ValueError(
            f"--teacher {d}: {PROBABILITIES_FILE} has no row for {len(missing)} of the run's "
            f"{len(paths)} images (e.g. {missing[0]}); it must score every one"
        )
    return np.array([given[k] for k in keys], dtype=np.float64)


def teacher_probabilities(
    teachers: list[str],
    views: list[np.ndarray],
    pre: PreprocessConfig,
    val_files: list[str],
    bf16: bool = False,
    paths: list[str] | None = None,
) -> np.ndarray:
    """The teachers' mean calibrated P(female) of every image in every view: ``views x N``.

    ``bf16``: run the teachers under bfloat16 autocast in NHWC, as the training step does where
    the CPU has fast bfloat16 (the soft targets only need to be close; the graph users get is
    int8 anyway). ``paths``: every image's file, in the views' order (for file teachers).
    """
    dirs = [check_teacher(t, pre, val_files) for t in teachers]
    probs = np.zeros((len(views), len(views[0])), dtype=np.float64)
    for d in dirs:
        if is_file_teacher(d):
            probs += file_probabilities(d, paths or [])[None, :]
            continue
        model = load_model(d).to(memory_format=torch.channels_last)
        temperature = float(model.config.get("calibration", {}).get("temperature", 1.0))
        for v, arrays in enumerate(views):
            probs[v] += probability(_logits(model, arrays, bf16), temperature)
    return (probs / len(dirs)).astype(np.float32)


def cached_probabilities(
    cache_dir: Path,
    teachers: list[str],
    views: list[np.ndarray],
    pre: PreprocessConfig,
    val_files: list[str],
    data_key: str,
    bf16: bool = False,
    save: bool = True,
    paths: list[str] | None = None,
) -> tuple[np.ndarray, bool]:
    """:func:`teacher_probabilities`, kept in ``cache_dir`` (a run's ``last/``) under a key of
    the teachers' weights and config, the decoded data (``data_key``) and the precision, so
    ``--resume`` reads them back instead of repeating the pass; returns them and whether they
    were read back. The teachers are checked against this run's split either way. ``save``:
    write them (under torchrun only rank 0 does; the others may read what it wrote)."""
    h = hashlib.sha256(f"{data_key}|bf16={bf16}".encode())
    for t in teachers:
        d = check_teacher(t, pre, val_files)
        names = (
            (PROBABILITIES_FILE, VALIDATION_FILE)
            if is_file_teacher(d)
            else (WEIGHTS_FILE, CONFIG_FILE)
        )
        for name in names:
            h.update(hashlib.sha256((d / name).read_bytes()).digest())
    key = h.hexdigest()[:24]
    npy, meta = cache_dir / CACHE_FILE, cache_dir / CACHE_KEY_FILE
    if meta.is_file() and npy.is_file() and json.loads(meta.read_text()).get("key") == key:
        return np.load(npy, allow_pickle=False), True
    probs = teacher_probabilities(teachers, views, pre, val_files, bf16, paths)
    if save:  # the array first, then the key that vouches for it, each replaced atomically
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".tmp")
        with tmp.open("wb") as f:
            np.save(f, probs, allow_pickle=False)
        os.replace(tmp, npy)
        write_json(meta, {"key": key, "teachers": list(teachers)})
    return probs, False


def _logits(model, arrays: np.ndarray, bf16: bool, batch_size: int = 512) -> np.ndarray:
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(arrays), batch_size):
            x = torch.from_numpy(to_batch(np.asarray(arrays[i : i + batch_size])))
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out)


def soft_targets(
    labels: np.ndarray, smoothing: np.ndarray, teacher: np.ndarray | None, distill: float
) -> np.ndarray:
    """Training targets: each label pulled ``smoothing`` towards 0.5, then mixed with the
    teachers' probability (the view drawn for each image) at weight ``distill``."""
    target = labels * (1 - smoothing) + 0.5 * smoothing
    if teacher is None:
        return target.astype(np.float32)
    return ((1 - distill) * target + distill * teacher).astype(np.float32)
