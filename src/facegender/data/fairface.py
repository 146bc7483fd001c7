"""FairFace's layout: ``labels.csv`` (``file,age,gender,race[,service_test]``) beside the images.

Ages are FairFace's buckets (``3-9``, ``more than 70``); a copy of the CSV saved by a spreadsheet
turns ``3-9`` into ``03-Sep`` and ``10-19`` into ``Oct-19``, which are read back as the buckets.
An unknown gender, age or race is reported per row, never guessed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from facegender.data.samples import DataSet, Sample, Skipped
from facegender.labels import FAIRFACE_AGES, FAIRFACE_RACES, parse_label

LABELS_FILE = "labels.csv"
_SPREADSHEET_AGES = {"03-sep": "3-9", "sep-03": "3-9", "oct-19": "10-19", "19-oct": "10-19"}
_AGES = {a.lower(): a for a in FAIRFACE_AGES} | {"70+": "more than 70"}
_RACES = {r.lower(): r for r in FAIRFACE_RACES} | {"latino hispanic": "Latino_Hispanic"}


def is_fairface_header(fieldnames: list[str] | None) -> bool:
    cols = {c.strip().lower() for c in fieldnames or []}
    return {"file", "gender"} <= cols


def fairface_age(text: str) -> str | None:
    """FairFace's age bucket from its CSV text (spreadsheet-mangled forms included), or None."""
    t = text.strip().lower()
    return _SPREADSHEET_AGES.get(t) or _AGES.get(t)


def read_fairface(csv_path: Path, source: str | None = None) -> DataSet:
    """Samples from a FairFace ``labels.csv``; paths are relative to the CSV's folder."""
    out = DataSet()
    root = csv_path.parent
    source = source or root.resolve().name
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not is_fairface_header(reader.fieldnames):
            out.skipped.append(Skipped(str(csv_path), "not FairFace's labels (no file, gender)"))
            return out
        for i, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            item = _row_sample(row, root, source, f"{csv_path}:{i}")
            (out.samples if isinstance(item, Sample) else out.skipped).append(item)
    return out


def _row_sample(row: dict, root: Path, source: str, where: str) -> Sample | Skipped:
    if not row.get("file"):
        return Skipped(where, "empty file name")
    path = str(root / row["file"])
    label = parse_label(row.get("gender", ""))
    if label is None:
        return Skipped(path, f"unknown gender {row.get('gender')!r} in {where}")
    age = fairface_age(row["age"]) if row.get("age") else None
    if row.get("age") and age is None:
        return Skipped(path, f"unknown age bucket {row['age']!r} in {where}")
    race = _RACES.get(row.get("race", "").lower()) if row.get("race") else None
    if row.get("race") and race is None:
        return Skipped(path, f"unknown race {row['race']!r} in {where}")
    if not Path(path).is_file():
        return Skipped(path, "file not found")
    return Sample(path, label, source, race=race, age_group=age)
