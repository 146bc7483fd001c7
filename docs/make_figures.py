"""Make the README's pictures for explain and abstain (docs/explain.png, docs/risk_coverage.png).

    python docs/make_figures.py                       # both, with the bundled model
    python docs/make_figures.py --heldout runs/finetune-bench/heldout.csv

explain.png: the bundled model's occlusion heat map of each face in examples/photos/two_people.jpg
(photos that may be shown: see examples/photos/README.md), cut to the faces. risk_coverage.png:
``evaluate``'s risk-coverage curve of the bundled model on ``--heldout`` (default: the FairFace
split that benchmarks/finetune.py holds out, which a model trained on UTKFace and kaggle-gender
never saw); a curve shows no face, so real data can be used. Skipped when the file is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def explain_figure(out: Path, model: str | None) -> None:
    from PIL import Image

    from facegender.predict import Predictor

    e = Predictor(model).explain(ROOT / "examples" / "photos" / "two_people.jpg")
    tiles = []
    for f in e.faces:
        x, y, w, h = f.face.box
        pad = int(0.6 * max(w, h))
        box = (max(0, x - pad), max(0, y - pad), x + w + pad, y + h + pad)
        before = e.image.crop(box).resize((240, 240))
        after = f.overlay(e.image).crop(box).resize((240, 240))
        tiles += [before, after]
    sheet = Image.new("RGB", (240 * len(tiles), 240), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (240 * i, 0))
    sheet.save(out)
    print(f"wrote {out}: {[(f.face.gender, round(f.face.female_probability, 3)) for f in e.faces]}")


def risk_figure(out: Path, heldout: Path, model: str | None, label: str) -> None:
    from facegender import plots
    from facegender.evaluate import evaluate

    r = evaluate([str(heldout)], model=model)
    title = f"{'Bundled model' if model is None else model} on {r['n']} {label}"
    out.write_bytes(plots.risk_coverage_png(r["risk_coverage"], "age", title))
    at = r["risk_coverage"]["overall"]["coverage_at_accuracy"]
    print(f"wrote {out}: accuracy {r['accuracy']:.4f}; coverage at accuracy {at}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Checkpoint (default: the bundled model).")
    ap.add_argument("--heldout", default=str(ROOT / "runs" / "finetune-bench" / "heldout.csv"))
    ap.add_argument("--label", default="FairFace faces it never trained on")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--only", choices=["explain", "risk"], default=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.only != "risk":
        explain_figure(out / "explain.png", args.model)
    if args.only == "explain":
        return 0
    if Path(args.heldout).is_file():
        risk_figure(out / "risk_coverage.png", Path(args.heldout), args.model, args.label)
    else:
        print(f"no {args.heldout}: risk_coverage.png not made", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
