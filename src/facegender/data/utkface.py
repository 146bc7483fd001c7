"""UTKFace names: ``age_gender_race_date.jpg[.chip.jpg]``; gender 0 = male, 1 = female."""

from __future__ import annotations

import re

from facegender.data.samples import Sample, Skipped
from facegender.labels import UTKFACE_RACES

_UTK = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
_UTK_LIKE = re.compile(r"^\d+_")


def looks_like_utkface(name: str) -> bool:
    """True for names starting like UTKFace's, so a malformed one is reported, not ignored."""
    return bool(_UTK_LIKE.match(name))


def parse_utkface(path: str, name: str, source: str) -> Sample | Skipped:
    m = _UTK.match(name)
    if not m:
        return Skipped(path, "malformed UTKFace name (want age_gender_race_date.jpg)")
    age, gender, race = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if gender not in (0, 1):
        return Skipped(path, f"unknown label: gender {gender} (want 0 or 1)")
    if not 0 <= race <= 4:
        return Skipped(path, f"unknown race {race} (want 0-4)")
    if age > 120:
        return Skipped(path, f"implausible age {age}")
    return Sample(path, gender, source, age=age, race=UTKFACE_RACES[race])
