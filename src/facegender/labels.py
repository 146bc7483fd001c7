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
OPEN_END = 10_000  # the upper end of an open age band or bucket ("60+", "more than 70")
# (name, first year, last year): UTKFace's ages in years are reported in these bands
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-3", 0, 3),
    ("4-12", 4, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, OPEN_END),
)
# What the auxiliary age head (``train --age-weight``) learns: FairFace's coarsest buckets, which
# UTKFace's exact ages also fall into, so both sources teach the same classes.
AGE_CLASSES: tuple[tuple[str, int, int], ...] = (
    ("0-2", 0, 2),
    ("3-9", 3, 9),
    ("10-19", 10, 19),
    ("20-59", 20, 59),
    ("60+", 60, OPEN_END),
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


def age_span(sample) -> tuple[int, int] | None:
    """The years a sample's age lies in: its exact age, else its source's bucket (FairFace
    ``3-9``, ``more than 70``, open-ended); None where it has neither."""
    if sample.age is not None:
        return sample.age, sample.age
    bucket = sample.age_group or ""
    if m := re.fullmatch(r"(\d+)-(\d+)", bucket):
        return int(m.group(1)), int(m.group(2))
    if m := re.fullmatch(r"more than (\d+)", bucket):
        return int(m.group(1)), OPEN_END
    return None


def band_index(bands: tuple[tuple[str, int, int], ...], span: tuple[int, int] | None) -> int:
    """The index of the band in ``bands`` that holds all of ``span``; -1 for none (or no span)."""
    if span is not None:
        for i, (_, lo, hi) in enumerate(bands):
            if lo <= span[0] and span[1] <= hi:
                return i
    return -1


def age_band(age: int | None) -> str | None:
    i = band_index(AGE_BANDS, None if age is None else (age, age))
    return AGE_BANDS[i][0] if i >= 0 else None


def age_group(sample) -> str | None:
    """A sample's age group: its source's own bucket if it has one, else its UTKFace band."""
    return sample.age_group or age_band(sample.age)


CHILD_MAX_AGE = 12


def is_child(sample) -> bool:
    """Under 13, by the sample's age or else by its source's bucket (FairFace ``3-9`` is,
    ``10-19`` is not: a bucket counts only when all of it is under 13)."""
    span = age_span(sample)
    return span is not None and span[1] <= CHILD_MAX_AGE


def age_class(sample) -> int:
    """The index in :data:`AGE_CLASSES` of a sample's age, or -1 where it is unknown or a
    bucket straddles two classes."""
    return band_index(AGE_CLASSES, age_span(sample))


def race_name(race: int | str | None) -> str | None:
    """A race group's name: names pass through, an int is UTKFace's 0-4 code."""
    if race is None or isinstance(race, str):
        return race or None
    return UTKFACE_RACES[race] if 0 <= race < len(UTKFACE_RACES) else None
