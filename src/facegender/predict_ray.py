"""``facegender predict --engine ray``: the same :class:`~facegender.predict.Predictor` on Ray Data.

Each Ray worker is an actor that builds one Predictor (one classifier thread, detection in the
same process) and runs whole batches of paths through :meth:`Predictor.predict_iter`, so a row
is exactly what the local engine writes for that image; a bad image is an error row there too.
The driver lists the inputs, skips what ``--out`` already holds (``--resume``) and streams the
rows to one output as they arrive: JSONL and CSV through :class:`facegender.predict_io.ResultWriter`
(the local engine's writer), Parquet as a folder of part files that are each complete on disk.

Without ``address`` an embedded Ray cluster with ``workers`` CPUs starts in this process and stops
at the end; with one (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) the job runs on that cluster,
whose nodes must see the image paths and the model at the same paths. Ray is imported only here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from facegender.predict import Face, ImageResult
from facegender.predict_io import ResultWriter, done_paths, iter_image_paths

OUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
LIST_SUFFIXES = (".txt", ".lst")
MAX_BLOCKS = 10_000  # Ray blocks of one batch each, up to this many (then larger blocks)
PART_ROWS = 10_000  # a Parquet part file is closed after this many rows ...
PART_SECONDS = 60.0  # ... or this long, so an interruption loses at most one part


def output_format(out: str | Path) -> str:
    fmt = OUT_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"--engine ray writes Parquet, CSV or JSONL chosen by the --out extension "
            f"({', '.join(OUT_FORMATS)}), not {Path(out).name!r}"
        )
    return fmt


# -- inputs -------------------------------------------------------------------------------------


def iter_inputs(paths: Iterable[str | Path], recursive: bool = False) -> Iterator[str]:
    """Image paths from folders, list files (``.txt``: one path a line, ``#`` comments) and
    Parquet/CSV tables with a ``path`` column; any other file is itself an input (an image, or an
    error row). Relative paths inside a list or table are relative to that file."""
    for p in paths:
        p = Path(p)
        suffix = p.suffix.lower()
        if p.is_dir():
            yield from iter_image_paths([p], recursive)
        elif p.is_file() and suffix in LIST_SUFFIXES:
            with p.open(encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        yield _relative_to(line, p)
        elif p.is_file() and suffix == ".parquet":
            yield from (_relative_to(v, p) for v in _parquet_paths(p))
        elif p.is_file() and suffix == ".csv":
            with p.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if "path" not in (reader.fieldnames or []):
                    raise ValueError(f"{p} has no 'path' column (columns: {reader.fieldnames})")
                for row in reader:
                    if row["path"]:
                        yield _relative_to(row["path"], p)
        else:
            yield str(p)


def _relative_to(value: str, listing: Path) -> str:
    return value if Path(value).is_absolute() else str(listing.parent / value)


def _parquet_paths(p: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(p)
    if "path" not in f.schema_arrow.names:
        raise ValueError(f"{p} has no 'path' column (columns: {f.schema_arrow.names})")
    for batch in f.iter_batches(columns=["path"], batch_size=65_536):
        yield from (v for v in batch.column(0).to_pylist() if v)


# -- outputs ------------------------------------------------------------------------------------


def result_from_dict(d: dict[str, Any]) -> ImageResult:
    """Inverse of :meth:`ImageResult.to_dict` (rows travel from the workers as JSON)."""
    faces = [Face(f["box"], f["score"], f["gender"], f["female_probability"]) for f in d["faces"]]
    return ImageResult(
        d["path"], d["status"], d["error"], d["width"], d["height"], faces,
        error_code=d.get("error_code"),
    )  # fmt: skip


def parquet_schema():
    import pyarrow as pa

    face = pa.struct(
        [
            ("box", pa.list_(pa.int32())),
            ("score", pa.float64()),
            ("gender", pa.string()),
            ("female_probability", pa.float64()),
        ]
    )
    return pa.schema(
        [
            ("path", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("error_code", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("faces", pa.list_(face)),
        ]
    )


def parquet_done_paths(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(folder.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["path"]).column(0).to_pylist())
    return done


class ParquetParts:
    """One result per row, written to ``folder/part-NNNNN.parquet`` files (pandas, pyarrow,
    DuckDB and Spark read the folder as one table). A part is written under a hidden temporary
    name and renamed when closed, so every visible part is complete."""

    def __init__(self, folder: Path):
        import pyarrow.parquet as pq

        self._pq, self.folder = pq, folder
        folder.mkdir(parents=True, exist_ok=True)
        taken = [int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")]
        self.index = max(taken, default=-1) + 1
        self.schema = parquet_schema()
        self.rows: list[dict] = []
        self.writer = None
        self.n_part, self.opened = 0, time.monotonic()

    def write(self, r: ImageResult) -> None:
        self.rows.append(r.to_dict())
        if len(self.rows) >= 1024:
            self._flush()
        if self.n_part + len(self.rows) >= PART_ROWS or (
            time.monotonic() - self.opened >= PART_SECONDS
        ):
            self._close_part()

    def _tmp(self) -> Path:
        return self.folder / f".part-{self.index:05d}.parquet.tmp"

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.rows:
            return
        if self.writer is None:
            self.writer = self._pq.ParquetWriter(self._tmp(), self.schema)
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        self.n_part += len(self.rows)
        self.rows = []

    def _close_part(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            os.replace(self._tmp(), self.folder / f"part-{self.index:05d}.parquet")
            self.index += 1
        self.writer, self.n_part, self.opened = None, 0, time.monotonic()

    def close(self) -> None:
        self._close_part()


# -- the Ray side -------------------------------------------------------------------------------


class PredictBatch:
    """A Ray Data actor: one Predictor, built once, for every batch of paths it is handed."""

    def __init__(self, model, detect: bool, min_face: int, batch_size: int):
        from facegender.predict import Predictor

        self.predictor = Predictor(
            model, detect=detect, min_face=min_face, threads=1, batch_size=batch_size
        )

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        names = [str(v) for v in batch["path"]]
        files = [str(v) for v in batch["file"]]
        try:
            rows = list(self.predictor.predict_iter(files, paths=names, workers=0))
        except Exception:  # never lose a batch: find the one image that broke it
            rows = [self._one(f, n) for f, n in zip(files, names, strict=True)]
        result = [json.dumps(r.to_dict()) for r in rows]
        return {"result": np.array(result, dtype=object)}

    def _one(self, file: str, name: str) -> ImageResult:
        try:
            return self.predictor.predict(file, path=name)
        except Exception as e:
            msg = f"prediction failed: {type(e).__name__}: {e}"
            return ImageResult(name, "error", msg, error_code="prediction_failed")


def _start_ray(address: str | None, workers: int) -> bool:
    """Connect to ``address`` or start an embedded cluster; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    opts: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **opts)
    else:
        ray.init(num_cpus=workers, **opts)
    return True


def run_predict_ray(
    paths: list[str],
    out: str,
    model=None,
    recursive: bool = False,
    detect: bool = True,
    min_face: int = 20,
    batch_size: int = 64,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log=None,
    on_result=None,
) -> dict[str, int]:
    """Predict every image under ``paths`` on Ray Data and stream the rows to ``out``.

    ``workers``: Ray actors, one CPU and one thread each (default: this machine's cores, or every
    CPU of the cluster at ``address``). ``on_result(ImageResult)`` is called for each row as it
    is written (benchmarks time the stream with it). Returns counts per status, like
    ``run_predict``.
    """
    try:
        import ray
        import ray.data
    except ModuleNotFoundError as e:
        raise ValueError(
            f"--engine ray needs Ray Data: pip install 'facegender[scale]' ({e})"
        ) from None
    from facegender.model_ref import resolve_model

    fmt = output_format(out)
    out_path = Path(out)
    model = resolve_model(model).spec  # fails here, not in every worker; absolute for workers
    if fmt == "parquet":
        if out_path.exists() and not out_path.is_dir():
            raise ValueError(f"{out_path} is a file; Parquet output is a folder of part files")
        done = parquet_done_paths(out_path) if out_path.is_dir() else set()
        if done and not resume:  # never delete a user's files: ask instead
            raise ValueError(f"{out_path} already holds results: pass --resume or remove it")
    else:  # like the local engine: overwrite, or append what is missing with --resume
        done = done_paths(out_path, fmt) if resume else set()

    listed = list(iter_inputs(paths, recursive))
    if not listed:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, paths))}")
    todo = [p for p in listed if p not in done]
    counts: dict[str, Any] = dict.fromkeys(("ok", "no_face", "error"), 0)
    counts["skipped_done"] = len(listed) - len(todo)
    start = time.perf_counter()
    if todo:
        started = _start_ray(address, workers or os.cpu_count() or 1)
        try:
            size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            ds = _dataset(todo, size, batch_size, model, detect, min_face)
            _write(ds, len(todo), out_path, fmt, bool(done), counts, progress, on_result)
        finally:
            if started:
                ray.shutdown()
    counts["seconds"] = round(time.perf_counter() - start, 2)
    if log is not None:
        n = counts["ok"] + counts["no_face"] + counts["error"]
        rate = n / counts["seconds"] if counts["seconds"] else 0.0
        skipped = counts["skipped_done"]
        log(
            f"{n} images ({rate:.1f}/s) on Ray: {counts['ok']} with faces, {counts['no_face']} "
            f"without, {counts['error']} unreadable"
            + (f"; {skipped} already in {out_path}" if skipped else "")
        )
    return counts


def _dataset(todo: list[str], size: int, batch_size: int, model, detect: bool, min_face: int):
    """The lazy Ray Dataset of result rows: paths in small blocks, a pool of ``size`` actors."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"path": p, "file": str(Path(p).absolute())} for p in todo]
    # One call per block, blocks small enough that no worker idles long at the end of the job,
    # and one block at a time per worker (a queue of them would pile up behind a slow one).
    blocks = min(len(items), max(math.ceil(len(items) / batch_size), size * 4), MAX_BLOCKS)
    per_call = math.ceil(len(items) / blocks)
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        PredictBatch,
        fn_constructor_kwargs={
            "model": model,
            "detect": detect,
            "min_face": min_face,
            "batch_size": batch_size,
        },
        batch_size=per_call,
        compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
        num_cpus=1,
        batch_format="numpy",
    )


def _write(ds, total: int, out_path: Path, fmt: str, append: bool, counts: dict, progress,
           on_result) -> None:  # fmt: skip
    """Stream the rows to the output as Ray hands them over (completion order)."""
    from tqdm import tqdm

    if fmt == "parquet":
        writer: Any = ParquetParts(out_path)
        stream = None
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        stream = out_path.open("a" if append else "w", newline="", encoding="utf-8")
        writer = ResultWriter(stream, fmt, header=not append)
    quiet = progress if progress is None else not progress  # None: only on a terminal
    bar = tqdm(total=total, unit="img", file=sys.stderr, desc="predict (ray)", disable=quiet)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for s in batch["result"]:
                r = result_from_dict(json.loads(s))
                writer.write(r)
                counts[r.status] += 1
                bar.update(1)
                if on_result is not None:
                    on_result(r)
    finally:
        bar.close()
        writer.close()
        if stream is not None:
            stream.close()
