"""The records every reader produces: a labelled sample, or a skipped item with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 0 = male, 1 = female
    source: str
    age: int | None = None
    race: str | None = None  # the source's own group name (UTKFace "Asian", FairFace "East Asian")
    age_group: str | None = None  # a source's own age bucket (FairFace "3-9"); else from ``age``


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class DataSet:
    samples: list[Sample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # paths whose detect + align crop found no face and fell back to the data set's own crop
    no_face: list[str] = field(default_factory=list)

    def extend(self, other: DataSet) -> None:
        self.samples.extend(other.samples)
        self.skipped.extend(other.skipped)
        self.no_face.extend(other.no_face)

    def summary(self) -> dict:
        """Counts per source and label, for logs and the checkpoint's data summary."""
        by_source: dict[str, dict[str, int]] = {}
        for s in self.samples:
            d = by_source.setdefault(s.source, {"male": 0, "female": 0})
            d["male" if s.label == 0 else "female"] += 1
        return {"n": len(self.samples), "skipped": len(self.skipped), "sources": by_source}
