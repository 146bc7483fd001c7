"""Label vocabulary shared by every reader and output: 0 = male, 1 = female (UTKFace's coding).

Race and age groups are each source's own names: UTKFace codes race 0-4 and gives an age in years
(grouped into :data:`AGE_BANDS`); FairFace names 7 race groups and gives an age bucket.
"""

from __future__ import annotations

import re

LABELS: tuple[str, str] = ("male", "female")
UTKFACE_RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
FAIRFACE_RACES: tuple[str, ...] = (
    "White",
    "Black",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
    "Latino_Hispanic",
)
FAIRFACE_AGES: tuple[str, ...] = (
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "more than 70",
)
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-3", 0, 3),
    ("4-12", 4, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, 10_000),
)
# Every age-group name in display order: UTKFace's bands, then FairFace's buckets.
AGE_GROUP_ORDER: tuple[str, ...] = tuple(b[0] for b in AGE_BANDS) + FAIRFACE_AGES
_ALIASES = {
    "male": 0,
    "man": 0,
    "men": 0,
    "m": 0,
    "0": 0,
    "female": 1,
    "woman": 1,
    "women": 1,
    "f": 1,
    "1": 1,
}


def parse_label(text: str) -> int | None:
    """Map a label word (``male``, ``Woman``, ``0`` ...) to 0/1, or None if it is not one."""
    return _ALIASES.get(str(text).strip().lower())


def age_band(age: int | None) -> str | None:
    if age is None:
        return None
    for name, lo, hi in AGE_BANDS:
        if lo <= age <= hi:
            return name
    return None


def age_group(sample) -> str | None:
    """A sample's age group: its source's own bucket if it has one, else its UTKFace band."""
    return sample.age_group or age_band(sample.age)


CHILD_MAX_AGE = 12


def is_child(sample) -> bool:
    """Under 13, by the sample's age or else by its source's bucket (FairFace ``3-9`` is,
    ``10-19`` is not: a bucket counts only when all of it is under 13)."""
    if sample.age is not None:
        return sample.age <= CHILD_MAX_AGE
    m = re.fullmatch(r"(\d+)-(\d+)", sample.age_group or "")
    return m is not None and int(m.group(2)) <= CHILD_MAX_AGE


# What the auxiliary age head (``train --age-weight``) learns: FairFace's coarsest buckets, which
# UTKFace's exact ages also fall into, so both sources teach the same classes.
AGE_CLASSES: tuple[tuple[str, int, int], ...] = (
    ("0-2", 0, 2),
    ("3-9", 3, 9),
    ("10-19", 10, 19),
    ("20-59", 20, 59),
    ("60+", 60, 10_000),
)


def age_class(sample) -> int:
    """The index in :data:`AGE_CLASSES` of a sample's age, or -1 where it is unknown or a
    bucket straddles two classes."""
    m = re.fullmatch(r"(\d+)-(\d+)", sample.age_group or "")
    if sample.age is not None:
        lo = hi = sample.age
    elif m is not None:
        lo, hi = int(m.group(1)), int(m.group(2))
    elif re.fullmatch(r"more than (\d+)", sample.age_group or ""):
        lo = hi = int(sample.age_group.split()[-1])
    else:
        return -1
    for i, (_, a, b) in enumerate(AGE_CLASSES):
        if a <= lo and hi <= b:
            return i
    return -1


def race_name(race: int | str | None) -> str | None:
    """A race group's name: names pass through, an int is UTKFace's 0-4 code."""
    if race is None or isinstance(race, str):
        return race or None
    return UTKFACE_RACES[race] if 0 <= race < len(UTKFACE_RACES) else None
