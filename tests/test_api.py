"""The JSON API, in process (FastAPI's TestClient): answers, hostile input and a fuzz of uploads.

Every hostile upload must get a JSON ``{"error": ...}`` and a 4xx; the odd formats phones and
editors produce (CMYK, 16-bit, alpha, EXIF rotation) must work.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # Starlette's TestClient nags about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from facegender.predict import Face
from facegender.serve import create_app

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
MAX_BYTES = 512 * 1024


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 40_000) -> bytes:
    """A ~70-byte PNG whose header claims ``side x side`` pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * (side + 1), 9)  # one row; the header alone must be refused
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    with TestClient(create_app(model=tiny_checkpoint, max_bytes=MAX_BYTES)) as c:
        yield c


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return (PHOTOS / "astronaut.jpg").read_bytes()


def post_file(client, data: bytes, name="photo.jpg", ctype="image/jpeg"):
    return client.post("/v1/predict", files={"file": (name, data, ctype)})


def post_raw(client, data, ctype="image/jpeg", headers=None):
    return client.post(
        "/v1/predict", content=data, headers={"content-type": ctype, **(headers or {})}
    )


# -- normal answers ------------------------------------------------------------------------------


def test_healthz_and_model_info(client, tiny_checkpoint):
    import json

    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    config = json.loads((Path(tiny_checkpoint) / "config.json").read_text())
    assert info["name"] == config["model"]["name"]
    assert info["version"] == config["version"]
    assert info["calibration"]["temperature"] == pytest.approx(config["calibration"]["temperature"])
    val = info["metrics"]["validation"]
    assert val["n"] == config["metrics"]["validation"]["n"]
    assert "groups" not in val  # a summary, not the whole model card
    assert info["image_size"] == config["preprocess"]["image_size"]
    assert info["backend"] in ("torch", "onnx") and info["detector"] == "yunet"


def test_serve_cli_refuses_a_missing_model(tmp_path):
    from click.testing import CliRunner

    from facegender.cli import cli

    r = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no model at" in r.output


def test_predict_face_matches_predictor(client, face_jpeg):
    r = post_file(client, face_jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["error"] is None
    assert (body["width"], body["height"]) == Image.open(io.BytesIO(face_jpeg)).size
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    x, y, w, h = face["box"]
    assert 0 <= x < x + w <= body["width"] and 0 <= y < y + h <= body["height"] and w >= 20
    assert 0.0 <= face["female_probability"] <= 1.0
    assert face["gender"] == ("female" if face["female_probability"] >= 0.5 else "male")
    # The same object the library (and so `facegender predict --format json`) gives.
    expected = client.app.state.predictor.predict(face_jpeg).to_dict()
    assert body == expected
    # Raw bytes give the same answer as the multipart form.
    assert post_raw(client, face_jpeg).json() == body
    assert post_raw(client, face_jpeg, "application/octet-stream").json() == body


def test_two_faces_and_no_face(client):
    two = post_file(client, (PHOTOS / "two_people.jpg").read_bytes()).json()
    assert two["status"] == "ok" and len(two["faces"]) == 2
    assert two["faces"][0]["box"][0] < 384 <= two["faces"][1]["box"][0]  # one in each half
    cat = post_file(client, (PHOTOS / "cat.jpg").read_bytes()).json()
    assert cat["status"] == "no_face" and cat["faces"] == []


# -- formats that must work ----------------------------------------------------------------------


def _face_variants(face_jpeg: bytes) -> dict[str, tuple[bytes, str]]:
    rgb = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(200)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    assert grey16.mode.startswith("I;16")
    return {
        "cmyk_jpeg": (_encode(rgb.convert("CMYK"), "JPEG", quality=90), "image/jpeg"),
        "png16": (_encode(grey16, "PNG"), "image/png"),
        "rgba_png": (_encode(rgba, "PNG"), "image/png"),
        "palette_gif": (_encode(rgb.convert("P"), "GIF"), "image/gif"),
        "webp": (_encode(rgb, "WEBP", quality=85), "image/webp"),
    }


@pytest.mark.parametrize("kind", ["cmyk_jpeg", "png16", "rgba_png", "palette_gif", "webp"])
def test_odd_formats_work(client, face_jpeg, kind):
    data, ctype = _face_variants(face_jpeg)[kind]
    r = post_file(client, data, f"face.{ctype.split('/')[1]}", ctype)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body  # the face is still found in every variant
    assert len(body["faces"]) == 1
    assert (body["width"], body["height"]) == Image.open(io.BytesIO(face_jpeg)).size


def test_exif_rotation_is_applied(client, face_jpeg):
    """The sideways-stored photo gives the upright photo's box (scaled), not the stored one."""
    path = PHOTOS / "astronaut_exif_rotated.jpg"
    stored = Image.open(path)
    assert stored.getexif().get(0x0112) == 6
    upright = post_file(client, face_jpeg).json()["faces"][0]["box"]
    rotated = post_file(client, path.read_bytes()).json()
    assert rotated["status"] == "ok" and len(rotated["faces"]) == 1
    scale = rotated["width"] / Image.open(io.BytesIO(face_jpeg)).width
    box = rotated["faces"][0]["box"]
    assert max(abs(a - b * scale) for a, b in zip(box, upright, strict=True)) <= 8
    # Ignoring the EXIF tag would find the face somewhere else entirely.
    raw = post_file(client, _encode(stored.convert("RGB"), "JPEG")).json()["faces"][0]["box"]
    assert abs(raw[0] - box[0]) + abs(raw[1] - box[1]) > 50


def test_one_pixel_image_is_ok_without_face(client):
    r = post_file(client, _encode(Image.new("RGB", (1, 1), "white"), "PNG"), "dot.png", "image/png")
    assert r.status_code == 200
    assert r.json()["status"] == "no_face" and (r.json()["width"], r.json()["height"]) == (1, 1)


# -- hostile input -------------------------------------------------------------------------------


def _error(r, status: int, words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    assert words in msg.lower(), msg
    assert "Traceback" not in r.text
    return msg


def test_empty_body(client):
    _error(post_raw(client, b""), 400, "empty")
    _error(post_file(client, b""), 400, "empty")


def test_not_an_image(client):
    _error(post_raw(client, b"%PDF-1.4 hello", "image/png"), 415, "not an image")
    _error(post_file(client, b"just some text", "notes.jpg"), 415, "not an image")


def test_truncated_jpeg(client, face_jpeg):
    _error(post_file(client, face_jpeg[: len(face_jpeg) // 2]), 400, "truncated")


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/json", "application/x-www-form-urlencoded", ""]
)
def test_wrong_content_type(client, face_jpeg, ctype):
    _error(post_raw(client, face_jpeg, ctype), 415, "content type")


def test_wrong_part_type_and_missing_field(client, face_jpeg):
    _error(post_file(client, face_jpeg, "a.txt", "text/plain"), 415, "file type")
    r = client.post("/v1/predict", files={"image": ("a.jpg", face_jpeg, "image/jpeg")})
    _error(r, 400, "no field 'file'")
    r = client.post(
        "/v1/predict", data={"file": "not a file"}, files={"x": ("x.jpg", b"1", "image/jpeg")}
    )
    _error(r, 400, "must be a file")
    r = client.post(
        "/v1/predict", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"}
    )
    assert r.status_code == 400 and "error" in r.json()


def test_over_size_limit_declared(client):
    big = b"\xff\xd8" + bytes(MAX_BYTES + 10)
    _error(post_raw(client, big), 413, "too large")
    _error(post_file(client, big), 413, "too large")


def test_over_size_limit_streamed(client):
    """A chunked body without Content-Length is cut off once it passes the limit."""
    sent = []

    def chunks():
        for _ in range(64):
            sent.append(1)
            yield bytes(32 * 1024)

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/jpeg"})
    _error(r, 413, "too large")
    assert "content-length" not in r.request.headers


def test_decompression_bomb(client):
    data = bomb_png()
    assert len(data) < 200
    _error(post_file(client, data, "bomb.png", "image/png"), 413, "image too large")


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    r = client.get("/v1/predict")
    assert r.status_code == 405 and "error" in r.json()
    assert r.headers["allow"] == "POST"  # the custom error handler keeps the header
    assert client.delete("/v1/model").headers["allow"] == "GET"


def test_status_comes_from_the_error_code_not_the_wording(tiny_checkpoint):
    """Rewording a message must not change the API's answer: the status follows the code."""
    from facegender.predict import ImageResult

    class Reworded:
        def __init__(self, inner, code):
            self.inner, self.code = inner, code
            self.classifier, self.cropper = inner.classifier, inner.cropper

        def predict(self, data):
            if isinstance(data, bytes) and data.startswith(b"reworded"):
                return ImageResult(None, "error", "something else entirely", error_code=self.code)
            return self.inner.predict(data)

    from facegender.predict import Predictor

    inner = Predictor(tiny_checkpoint, threads=1)
    for code, status in [("too_large", 413), ("not_image", 415), ("truncated", 400),
                         ("detection_failed", 500)]:  # fmt: skip
        with TestClient(create_app(predictor=Reworded(inner, code))) as c:
            r = post_raw(c, b"reworded bytes")
            assert r.status_code == status, (code, r.status_code)
            assert r.json() == {"error": "something else entirely", "error_code": code}


def test_openapi_declares_the_answers(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    assert {"200", "400", "413", "415", "500"} <= set(op["responses"])
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    name = ok["$ref"].rsplit("/", 1)[1]
    fields = set(spec["components"]["schemas"][name]["properties"])
    assert fields == set(client.app.state.predictor.predict(b"x").to_dict())
    face = Face([0, 0, 1, 1], 1.0, "male", 0.1).to_dict()
    assert set(spec["components"]["schemas"]["FaceOut"]["properties"]) == set(face)
    for path in ("/v1/model", "/healthz"):
        assert spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]  # not the empty schema


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tiny_checkpoint, tmp_path):
    """``schemathesis run --checks all`` against a live server (uvicorn in a child process),
    with the repository's schemathesis.toml and a bounded number of examples per operation."""
    import shutil as sh
    import subprocess
    import sys

    from facegender.serve.local import LocalServer

    exe = sh.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is in the test extra: pip install '.[test]'")
    root = Path(__file__).resolve().parents[1]
    with LocalServer(model=tiny_checkpoint) as srv:
        out = subprocess.run(
            [exe, "--config-file", str(root / "schemathesis.toml"), "run",
             f"{srv.url}/openapi.json", "--checks", "all", "--max-examples", "25", "--seed", "1",
             "--generation-database", "none", "--workers", "1", "--no-color",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout


def test_page_and_docs_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text.replace("http://127.0.0.1", "")
    assert "https://" not in page.text
    docs = client.get("/docs").text
    assert "cdn." not in docs and client.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


# -- fuzz ----------------------------------------------------------------------------------------


def _malformed(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.randrange(5)
    base = rng.choice(seeds)
    if kind == 0:  # random bytes, sometimes behind a real magic number
        magic = rng.choice([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF"])
        return magic + rng.randbytes(rng.randrange(0, 4096))
    if kind == 1:  # truncated at a random offset
        return base[: rng.randrange(1, len(base))]
    if kind == 2:  # corrupted header
        b = bytearray(base)
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(0, min(64, len(b)))] = rng.randrange(256)
        return bytes(b)
    if kind == 3:  # bit flips anywhere
        b = bytearray(base)
        for _ in range(rng.randrange(1, 32)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    # spliced: the head of one file on the tail of another
    other = rng.choice(seeds)
    return base[: rng.randrange(len(base))] + other[rng.randrange(len(other)) :]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on corrupt TIFF/EXIF tags
def test_fuzz_malformed_uploads_never_5xx(client, face_jpeg):
    small = Image.open(io.BytesIO(face_jpeg)).convert("RGB").resize((160, 160))
    seeds = [
        _encode(small, "JPEG", quality=80),
        _encode(small, "JPEG", quality=80, progressive=True),
        _encode(small, "PNG"),
        _encode(small.convert("RGBA"), "PNG"),
        _encode(small, "GIF"),
        _encode(small, "BMP"),
        _encode(small, "WEBP"),
        _encode(small, "TIFF"),
        bomb_png(20_000),
    ]
    from facegender.serve.app import error_status

    rng = random.Random(7)
    statuses: dict[int, int] = {}
    codes: set[str] = set()
    n = 240
    for i in range(n):
        data = _malformed(rng, seeds)
        r = post_raw(client, data) if i % 2 else post_file(client, data)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (i, r.status_code, r.text)
        body = r.json()
        if r.status_code >= 400:  # the status follows from the error's code, nothing else
            assert r.status_code == error_status(body["error_code"]), body
            codes.add(body["error_code"])
        else:
            assert body["status"] in ("ok", "no_face") and body["error_code"] is None
    assert sum(v for k, v in statuses.items() if k >= 400) > n // 4  # most were really broken
    assert {400, 415} <= set(statuses) and {"truncated", "not_image"} <= codes  # both kinds seen
    # The worker is alive and still right afterwards.
    assert client.get("/healthz").status_code == 200
    assert post_file(client, face_jpeg).json()["status"] == "ok"
