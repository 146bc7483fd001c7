"""A teacher for ``train --teacher`` from dlib's face-recognition descriptors (facegender.distill).

Why: the bundled model must stay small and train on a CPU in minutes, and at that size more
width, depth, epochs and ensembles of its own kind stopped paying (MODEL_CARD.md, "Ablations"):
its ensembles make the same mistakes. dlib's ResNet (22 MB, about 0.1 s a face on one core, from
PyPI's ``face_recognition_models``) learnt identity from about 3 million faces; a logistic
regression on its 128-D descriptors reads gender with mistakes that are largely other ones. It
cannot be bundled, so it teaches through a probabilities file.

    make dlib-venv                                           # .venv-dlib (dlib-bin, no compiling)
    python recipes/dlib_teacher.py --out runs/dlib_teacher   # about 1 h on 2 cores, resumable
    facegender train --config recipes/default.toml --teacher runs/dlib_teacher --out runs/kd

This script makes the recipe's split (same data, seed and validation share, so the student's
validation split is the teacher's too), writes ``OUT/images.csv`` and ``OUT/validation.csv``, and
runs ``recipes/dlib_embed.py`` in dlib's venv for the descriptors and the probabilities.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_split(recipe: Path, out: Path) -> int:
    """``images.csv`` (every decodable image of the recipe, in order) and ``validation.csv``."""
    from facegender.recipe import load_recipe
    from facegender.train import prepare_data

    cfg = load_recipe(recipe)
    cfg.progress = False
    _, ds, _, va_idx = prepare_data(cfg, lambda m: None, report=False, face_crop="own")
    held = set(va_idx)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "images.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "source", "race", "split"])
        for i, s in enumerate(ds.samples):
            split = "val" if i in held else "train"
            w.writerow([s.path, s.label, s.source, s.race or "", split])
    with (out / "validation.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        w.writerows([ds.samples[i].path] for i in va_idx)
    return len(ds.samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=HERE / "default.toml")
    ap.add_argument("--out", type=Path, default=Path("runs/dlib_teacher"))
    ap.add_argument(
        "--python",
        default=str(HERE.parent / ".venv-dlib" / "bin" / "python"),
        help="dlib's venv (make dlib-venv)",
    )
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="passed on to dlib_embed.py")
    args = ap.parse_args()
    if not Path(args.python).is_file():
        print(f"{args.python} not found: run `make dlib-venv` first", file=sys.stderr)
        return 2
    print(f"{write_split(args.recipe, args.out)} images -> {args.out}/images.csv", flush=True)
    cmd = [args.python, str(HERE / "dlib_embed.py"), str(args.out), *args.extra]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
