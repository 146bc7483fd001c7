"""Inputs and outputs of ``facegender predict``: lazy path walking, streaming writers, resume.

Everything here streams: paths are yielded one directory at a time, every result is written (and
jsonl/csv flushed) as soon as it exists, so a folder of 100,000 photos needs no more memory than a
folder of ten, and an interrupted run can ``--resume`` from what is already in the output file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from facegender.predict import ImageResult
from facegender.preprocess import IMAGE_SUFFIXES

CSV_FIELDS = (
    "path", "status", "error", "error_code", "width", "height",
    "face", "x", "y", "w", "h", "score", "gender", "female_probability",
)  # fmt: skip
FORMATS = ("table", "json", "jsonl", "csv")


def iter_image_paths(paths: Iterable[str | Path], recursive: bool = False) -> Iterator[str]:
    """Files as given (even non-images: they become error rows); folders' images in name order."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from _walk(p, recursive)
        else:
            yield str(p)


def _walk(folder: Path, recursive: bool) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    subdirs = []
    for e in entries:
        if e.is_dir():
            if recursive and not e.name.startswith("."):
                subdirs.append(e.path)
        elif Path(e.name).suffix.lower() in IMAGE_SUFFIXES and not e.name.startswith("."):
            yield e.path
    del entries
    for d in subdirs:
        yield from _walk(Path(d), recursive)


def done_paths(out: Path, fmt: str) -> set[str]:
    """Paths already in a jsonl/csv output file; a half-written last line is cut off first."""
    if not out.exists() or out.stat().st_size == 0:
        return set()
    _drop_partial_last_line(out)
    done: set[str] = set()
    with out.open(newline="", encoding="utf-8") as f:
        if fmt == "jsonl":
            for line in f:
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    continue
        else:
            for row in csv.DictReader(f):
                if row.get("path"):
                    done.add(row["path"])
    return done


def _drop_partial_last_line(path: Path) -> None:
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)


class ResultWriter:
    """Writes results in one format to a text stream as they arrive (jsonl/csv flushed per row)."""

    def __init__(self, stream: IO[str], fmt: str, header: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.stream, self.fmt, self.n = stream, fmt, 0
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if fmt == "csv" and header:
            self._csv.writerow(CSV_FIELDS)
        elif fmt == "json":
            stream.write("[")
        elif fmt == "table" and header:
            stream.write(table_header() + "\n")

    def write(self, r: ImageResult) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(r.to_dict()) + "\n")
        elif self.fmt == "json":
            self.stream.write(("," if self.n else "") + "\n  " + json.dumps(r.to_dict()))
        elif self.fmt == "csv":
            self._csv.writerows(csv_rows(r))
        else:
            self.stream.write(table_lines(r) + "\n")
        self.n += 1
        if self.fmt in ("jsonl", "csv"):
            self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.n else "]\n")
        self.stream.flush()


def csv_rows(r: ImageResult) -> list[list]:
    head = [r.path, r.status, r.error or "", r.error_code or "", _blank(r.width), _blank(r.height)]
    if not r.faces:
        return [head + [""] * 8]
    rows = []
    for i, f in enumerate(r.faces):
        d = f.to_dict()
        rows.append(head + [i, *d["box"], d["score"], d["gender"], d["female_probability"]])
    return rows


def _blank(v) -> str | int:
    return "" if v is None else v


def table_header() -> str:
    return f"{'status':<8} {'face':>4}  {'box (x,y,w,h)':<22} {'gender':<7} {'P(female)':>9}  path"


def table_lines(r: ImageResult) -> str:
    if not r.faces:
        detail = r.error if r.status == "error" else "no face found"
        return f"{r.status:<8} {'-':>4}  {detail}  {r.path or ''}"
    lines = []
    for i, f in enumerate(r.faces):
        box = ",".join(str(v) for v in f.box)
        lines.append(
            f"{r.status:<8} {i:>4}  {box:<22} {f.gender:<7} {f.female_probability:>9.3f}  "
            f"{r.path or ''}"
        )
    return "\n".join(lines)


def results_to_csv(results: Iterable[ImageResult]) -> str:
    """The CSV text for a list of results (used by the API and tests)."""
    buf = io.StringIO()
    w = ResultWriter(buf, "csv")
    for r in results:
        w.write(r)
    return buf.getvalue()


def run_predict(
    paths: list[str],
    model: str | None = None,
    fmt: str = "table",
    out: str | None = None,
    recursive: bool = False,
    annotate: str | None = None,
    detect: bool = True,
    min_face: int = 20,
    batch_size: int = 64,
    workers: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    stdout: IO[str] | None = None,
    log=None,
    min_confidence: float | None = None,
    explain: str | None = None,
    explain_values: bool = False,
) -> dict[str, int]:
    """``facegender predict``: stream every image under ``paths`` through the predictor.

    Raises ``ValueError``/``FileNotFoundError`` only when the command itself cannot run (bad
    options, no model, nothing to read); a bad image is an error row. ``workers=None`` picks
    in-process for a handful of images and worker processes for folders.
    ``explain``: a folder for each face's heat map over the photo (``explain_values``: and its
    values as JSON), see :func:`save_explanations`. Returns counts per status.
    """
    import sys
    import time

    from tqdm import tqdm

    from facegender.predict import Predictor

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if resume and (not out or fmt not in ("jsonl", "csv")):
        raise ValueError("--resume needs --out FILE with --format jsonl or csv")
    out_path = Path(out) if out else None
    done = done_paths(out_path, fmt) if resume and out_path else set()
    source, workers = _image_source(paths, recursive, done, workers)
    # Built once the worker count is known: the classifier gets the cores the workers leave.
    predictor = Predictor(model, detect=detect, min_face=min_face, batch_size=batch_size,
                          workers=workers, min_confidence=min_confidence)  # fmt: skip

    append = bool(done) and out_path is not None and out_path.exists()
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    stream = (
        out_path.open("a" if append else "w", newline="", encoding="utf-8")
        if out_path
        else (stdout or sys.stdout)
    )
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    counts = dict.fromkeys(("ok", "no_face", "error"), 0)
    start = time.perf_counter()
    bar = tqdm(
        unit="img",
        file=sys.stderr,
        disable=progress if progress is None else not progress,
        dynamic_ncols=True,
        desc="predict",
    )
    try:
        writer = ResultWriter(stream, fmt, header=not append)
        for r in predictor.predict_iter(source, workers=workers):
            writer.write(r)
            counts[r.status] += 1
            _pictures(r, predictor, roots, annotate, explain, explain_values)
            bar.update(1)
        writer.close()
    finally:
        bar.close()
        if out_path is not None:
            stream.close()
    counts["skipped_done"] = len(done)
    counts["seconds"] = round(time.perf_counter() - start, 2)
    if log is not None:
        log(_summary(counts, done, out_path))
    return counts


def _pictures(r: ImageResult, predictor, roots, annotate, explain, explain_values) -> None:
    """The per-image pictures asked for: ``--annotate`` copies, ``--explain`` heat maps."""
    if annotate and r.status != "error":
        _annotate(r, roots, Path(annotate))
    if explain and r.status == "ok":
        save_explanations(predictor, r.path, roots, Path(explain), explain_values)


def _image_source(paths: list[str], recursive: bool, done: set, workers: int | None):
    """The images still to do, streamed, and the worker count (``None``: in-process for a
    handful of images, worker processes once 16 are found)."""
    import itertools

    from facegender.predict import default_workers

    found = 0

    def todo() -> Iterator[str]:
        nonlocal found
        for p in iter_image_paths(paths, recursive):
            found += 1
            if p not in done:
                yield p

    todo_iter = todo()
    head = list(itertools.islice(todo_iter, 16))
    if workers is None:
        workers = default_workers() if len(head) == 16 else 0
    if not head and not found:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, paths))}")
    return itertools.chain(head, todo_iter), workers


def _summary(counts: dict, done: set, out_path: Path | None) -> str:
    n = counts["ok"] + counts["no_face"] + counts["error"]
    rate = n / counts["seconds"] if counts["seconds"] else 0.0
    return (
        f"{n} images ({rate:.1f}/s): {counts['ok']} with faces, {counts['no_face']} without, "
        f"{counts['error']} unreadable" + (f"; {len(done)} already in {out_path}" if done else "")
    )


def save_explanations(predictor, path: str, roots: list[Path], out_dir: Path, values: bool) -> list:
    """``predict --explain DIR``: ``DIR/<name>.face<i>.png`` (the photo with face i's heat map)
    and, with ``values``, ``DIR/<name>.face<i>.json`` (the face, its saliency grid). Paths under
    an input folder keep their sub-folders, as for ``--annotate``. Returns the files written."""
    import json as _json

    from facegender.annotate import annotated_path

    e = predictor.explain(path)
    stem = annotated_path(path, roots, out_dir)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for f in e.faces:
        png = stem.with_name(f"{stem.name}.face{f.index}.png")
        f.overlay(e.image).save(png)
        written.append(png)
        if values:
            js = png.with_suffix(".json")
            js.write_text(_json.dumps({"path": path, **f.to_dict()}) + "\n")
            written.append(js)
    return written


def _annotate(r: ImageResult, roots: list[Path], out_dir: Path) -> None:
    from facegender.annotate import annotated_path, save_annotated
    from facegender.preprocess import ImageDecodeError, open_image

    try:
        img = open_image(r.path)
        save_annotated(img, r, annotated_path(r.path, roots, out_dir))
    except (ImageDecodeError, OSError):
        pass
