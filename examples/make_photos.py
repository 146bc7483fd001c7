"""Re-create the example photos from scikit-image's bundled sample images (public domain / CC0).

They live in the package (src/facegender/photos, so `facegender demo` works from a wheel);
examples/photos is a link to that folder.

    pip download --no-deps scikit-image && unzip -j scikit_image-*.whl 'skimage/data/*' -d skdata
    python examples/make_photos.py skdata

scikit-image is needed only to get these files; facegender does not depend on it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    astronaut = Image.open(src / "astronaut.png").convert("RGB")
    camera = Image.open(src / "camera.png").convert("RGB")
    astronaut.save(out / "astronaut.jpg", quality=85)
    # Two people in one picture.
    pair = Image.new("RGB", (768, 384))
    pair.paste(astronaut.resize((384, 384), Image.Resampling.LANCZOS), (0, 0))
    pair.paste(camera.resize((384, 384), Image.Resampling.LANCZOS), (384, 0))
    pair.save(out / "two_people.jpg", quality=85)
    # Stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to display"), as
    # phones do: a reader that ignores EXIF sees a sideways face.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = astronaut.resize((384, 384), Image.Resampling.LANCZOS).rotate(90)
    sideways.save(out / "astronaut_exif_rotated.jpg", quality=85, exif=exif)
    # A cat: a face, but not a human one.
    Image.open(src / "chelsea.png").convert("RGB").save(out / "cat.jpg", quality=85)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent / "photos")
