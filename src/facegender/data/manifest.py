"""CSV manifests: ``path,label`` plus optional ``age,age_group,race,source``, paths relative to it.

``race`` is a group name (any source's), or UTKFace's 0-4 code.

:func:`write_manifest` writes one that reads back to the same samples (held-out splits, folds).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facegender.data.samples import DataSet, Sample, Skipped
from facegender.labels import parse_label, race_name


def _int_or_none(v: str | None) -> int | None:
    v = (v or "").strip()
    return int(float(v)) if v else None


def _race(v: str | None) -> str | None:
    v = (v or "").strip()
    if not v:
        return None
    if v.isdigit():
        name = race_name(int(v))
        if name is None:
            raise ValueError(f"race code {v} (UTKFace codes are 0-4)")
        return name
    return v


def read_manifest(csv_path: Path) -> DataSet:
    out = DataSet()
    root = csv_path.parent
    default_source = csv_path.stem
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower() for c in reader.fieldnames or []}
        if not {"path", "label"} <= cols:
            out.skipped.append(Skipped(str(csv_path), "manifest lacks 'path' and 'label' columns"))
            return out
        for i, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "") for k, v in raw.items() if k}
            rel = row["path"].strip()
            where = f"{csv_path}:{i}"
            if not rel:
                out.skipped.append(Skipped(where, "empty path"))
                continue
            path = str((root / rel) if not Path(rel).is_absolute() else Path(rel))
            label = parse_label(row["label"])
            if label is None:
                out.skipped.append(Skipped(path, f"unknown label {row['label']!r}"))
                continue
            if not Path(path).is_file():
                out.skipped.append(Skipped(path, "file not found"))
                continue
            try:
                age, race = _int_or_none(row.get("age")), _race(row.get("race"))
            except ValueError:
                out.skipped.append(Skipped(path, f"bad age/race in {where}"))
                continue
            source = row.get("source", "").strip() or default_source
            group = row.get("age_group", "").strip() or None
            out.samples.append(Sample(path, label, source, age=age, race=race, age_group=group))
    return out


def write_manifest(samples: list[Sample], path: Path) -> Path:
    """A CSV manifest ``facegender evaluate`` (and ``train``) reads back with the same labels."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "age", "age_group", "race", "source"])
        for s in samples:
            age = "" if s.age is None else s.age
            w.writerow([s.path, s.label, age, s.age_group or "", s.race or "", s.source])
    return path
