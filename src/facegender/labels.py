"""Label vocabulary shared by every reader and output: 0 = male, 1 = female (UTKFace's coding)."""

from __future__ import annotations

LABELS: tuple[str, str] = ("male", "female")
POSITIVE = "female"
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-3", 0, 3),
    ("4-12", 4, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, 10_000),
)
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


def label_name(label: int) -> str:
    return LABELS[int(label)]


def age_band(age: int | None) -> str | None:
    if age is None:
        return None
    for name, lo, hi in AGE_BANDS:
        if lo <= age <= hi:
            return name
    return None


def race_name(race: int | None) -> str | None:
    return None if race is None or not 0 <= race < len(RACES) else RACES[race]
