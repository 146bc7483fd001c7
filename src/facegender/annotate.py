"""Draw the predictor's boxes and labels on a copy of the photo (``predict --annotate DIR``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from facegender.predict import Face, ImageResult

COLOURS = {"female": (230, 60, 140), "male": (40, 120, 230)}


def label_text(face: Face) -> str:
    """``male 90%``: the label with its own probability, as the web page shows it (P(female)
    beside ``male`` would read as "10 % male")."""
    p = face.female_probability if face.gender == "female" else 1.0 - face.female_probability
    return f"{face.gender} {100 * p:.0f}%"


def draw_result(img: Image.Image, result: ImageResult) -> Image.Image:
    """A copy of ``img`` (RGB, already EXIF-rotated) with one labelled box per face."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(out.size) / 30)))
    for f in result.faces:
        x, y, w, h = f.box
        colour = COLOURS.get(f.gender, (255, 200, 0))
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=width)
        label = label_text(f)
        tl, tt, tr, tb = draw.textbbox((0, 0), label, font=font)
        ty = y - (tb - tt) - 2 * width if y - (tb - tt) - 2 * width >= 0 else y + h
        draw.rectangle((x, ty, x + (tr - tl) + 2 * width, ty + (tb - tt) + 2 * width), fill=colour)
        draw.text((x + width - tl, ty + width - tt), label, fill=(255, 255, 255), font=font)
    return out


def annotated_path(path: str, roots: list[Path], out_dir: Path) -> Path:
    """Where the copy of ``path`` goes: its path relative to the input folder it came from."""
    p = Path(path)
    for root in roots:
        try:
            return out_dir / p.resolve().relative_to(root.resolve())
        except ValueError:
            continue
    return out_dir / p.name


def save_annotated(img: Image.Image, result: ImageResult, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    im = draw_result(img, result)
    if dest.suffix.lower() in (".jpg", ".jpeg"):
        im.save(dest, quality=90)
    elif dest.suffix.lower() in (".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"):
        im.save(dest)
    else:
        im.save(dest.with_suffix(dest.suffix + ".png"))
