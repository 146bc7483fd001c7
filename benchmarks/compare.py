"""Put ``benchmarks/bundled_model.py`` results side by side: the rows an ablation is judged on.

    python benchmarks/compare.py benchmarks/results/bundled_model.json \\
        benchmarks/results/ablation_3src_80px_16ep.json --names recipe 80px

Prints one markdown table (a column per result file) with each source's accuracy on its own
crops and through predict, the predict gap, the weakest FairFace race x gender group, accuracy
and over-confidence per age band, and writes the same rows as JSON (``--json``). It reads
results only, so an ablation table in MODEL_CARD.md can be regenerated without retraining.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("own", "aligned")


def rows(result: dict) -> dict[str, float | str]:
    """The figures of one result file, by row name (accuracies in percent)."""
    out: dict[str, float | str] = {}
    for view in VIEWS:
        out[f"overall {view}"] = 100 * result[f"overall_{view}"]["accuracy"]
    for src, per_view in sorted(result["sources"].items()):
        own, aligned = (100 * per_view[v]["accuracy"] for v in VIEWS)
        out[f"{src} own"], out[f"{src} predict"] = own, aligned
        out[f"{src} predict - own"] = aligned - own
        groups = per_view["own"].get("race_gender") or {}
        if groups:
            name, worst = min(groups.items(), key=lambda kv: kv[1]["accuracy"])
            out[f"{src} weakest race x gender"] = 100 * worst["accuracy"]
            out[f"{src} weakest group"] = name
        calibration = per_view["own"].get("ece_by_age", {})
        for band, m in per_view["own"].get("age", {}).items():
            out[f"{src} age {band} accuracy"] = 100 * m["accuracy"]
            if "overconfidence" in calibration.get(band, {}):  # older files: ECE only
                out[f"{src} age {band} over-confidence"] = calibration[band]["overconfidence"]
    return out


def _read(path: Path) -> dict:
    """A result file, refused with its name when it is not a three-source bundled_model.py
    result (the two-source files under benchmarks/results/ have another layout)."""
    result = json.loads(path.read_text())
    if not all(f"overall_{v}" in result for v in VIEWS) or "sources" not in result:
        raise SystemExit(
            f"{path}: not a benchmarks/bundled_model.py result with own and aligned views "
            "(an older two-source file?); compare.py reads those only"
        )
    return result


def table(results: list[dict], names: list[str]) -> str:
    """A markdown table, one row per figure any result has (missing ones are blank)."""
    keys = list(dict.fromkeys(k for r in results for k in r))
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for k in keys:
        cells = [_cell(k, r.get(k)) for r in results]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(key: str, value: float | str | None) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return f"{value:+.3f}" if key.endswith("over-confidence") else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="bundled_model.py JSON files")
    ap.add_argument("--names", nargs="+", help="column names (default: the file stems)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/compare.json")
    args = ap.parse_args(argv)
    names = args.names or [p.stem for p in args.results]
    if len(names) != len(args.results):
        ap.error(f"{len(names)} --names for {len(args.results)} result files")
    figures = [rows(_read(p)) for p in args.results]
    print(table(figures, names))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(zip(names, figures, strict=True)), indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
