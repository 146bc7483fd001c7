"""Turn ``DATA`` arguments (folders or CSV manifests) into one :class:`DataSet`.

A folder holding FairFace's ``labels.csv`` is read through it. In any other folder, a file under a
class folder (``male``/``female``/``man``/``woman``/``men``/``women``,
any case, any depth, e.g. ``Training/male``) takes that label; otherwise a UTKFace-style name gives
it. Anything else that looks like an image is reported as unlabelled, never silently dropped.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from facegender.data.fairface import LABELS_FILE, is_fairface_header, read_fairface
from facegender.data.manifest import read_manifest
from facegender.data.samples import DataSet, Sample, Skipped
from facegender.data.utkface import looks_like_utkface, parse_utkface
from facegender.labels import parse_label
from facegender.preprocess import IMAGE_SUFFIXES

_CLASS_DIRS = {"male", "female", "man", "woman", "men", "women"}


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _class_of(rel_dirs: tuple[str, ...]) -> int | None:
    for d in reversed(rel_dirs):
        if d.lower() in _CLASS_DIRS:
            return parse_label(d)
    return None


def read_folder(root: Path, source: str | None = None) -> DataSet:
    source = source or root.resolve().name
    if _csv_is_fairface(root / LABELS_FILE):
        return read_fairface(root / LABELS_FILE, source)
    out = DataSet()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        cls = _class_of(rel)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if cls is not None:
                if not _is_image_name(name) and not name.lower().endswith(".chip.jpg"):
                    out.skipped.append(Skipped(path, "not an image file name"))
                    continue
                meta = parse_utkface(path, name, source) if looks_like_utkface(name) else None
                if isinstance(meta, Sample) and meta.label != cls:
                    out.skipped.append(Skipped(path, "conflicting labels: folder and file name"))
                    continue
                age = meta.age if isinstance(meta, Sample) else None
                race = meta.race if isinstance(meta, Sample) else None
                out.samples.append(Sample(path, cls, source, age=age, race=race))
            elif looks_like_utkface(name):
                item = parse_utkface(path, name, source)
                (out.samples if isinstance(item, Sample) else out.skipped).append(item)
            elif _is_image_name(name):
                out.skipped.append(
                    Skipped(path, "no label: not in a class folder, not a UTKFace name")
                )
    return out


def _csv_is_fairface(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8-sig") as f:
        return is_fairface_header(next(csv.reader(f), []))


def read_data(specs: list[str | Path] | str | Path) -> DataSet:
    """Read every ``DATA`` spec; missing paths are reported as skipped items, never raised."""
    if isinstance(specs, str | Path):
        specs = [specs]
    out = DataSet()
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            out.extend(read_folder(p))
        elif p.is_file() and p.suffix.lower() == ".csv":
            out.extend(read_fairface(p) if _csv_is_fairface(p) else read_manifest(p))
        elif p.is_file():
            out.skipped.append(Skipped(str(p), "not a folder or a .csv manifest"))
        else:
            out.skipped.append(Skipped(str(p), "data path not found"))
    return out
