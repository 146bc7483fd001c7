"""The ``facegender`` command line. Each command is a thin shell over the library function of the
same job, so the CLI, the Python API and the web service share one code path."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from facegender import __version__
from facegender.config import CROPS
from facegender.options import config_options, recipe_option, train_config


class _Fail(click.ClickException):
    exit_code = 2


def _resolve_model(_ctx, _param, value: str | None):
    """--model, resolved once by the one resolver: every command gets a ModelRef or exit 2."""
    from facegender.model_ref import resolve_model

    try:
        return resolve_model(value)
    except FileNotFoundError as e:
        raise click.BadParameter(str(e)) from None


# --model of the commands that use a trained model: a path, or a bundled model by name.
_model_option = click.option(
    "--model",
    default=None,
    callback=_resolve_model,
    help="Checkpoint folder, .onnx file, or bundled `default`/`fast` (default: default).",
)


def _choice(*flags: str, choices: Sequence[str], help: str | None = None):
    """An option that takes one of a fixed list; the first choice is the default."""
    return click.option(
        *flags, type=click.Choice(choices), default=choices[0], show_default=True, help=help
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facegender")
def cli() -> None:
    """Tell whether faces are male or female: train, evaluate, predict, export, serve."""


@cli.command("models")
def models_cmd() -> None:
    """List the registered model architectures."""
    from facegender.models import list_models

    for name in list_models():
        click.echo(name)


@cli.command(
    params=[
        recipe_option,
        *config_options(),
        click.Option(
            ["--resume"], is_flag=True, help="Continue from OUT/last after an interruption."
        ),
    ]
)
def train(**opts) -> None:
    """Train a model on DATA and write a checkpoint folder to OUT."""
    from facegender.train import train as run_train

    resume = opts.pop("resume")
    cfg = train_config(opts)
    out = Path(cfg.out)
    if (out / "last").exists() and not resume:
        raise _Fail(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    try:
        run_train(cfg, resume=resume, log=lambda m: click.echo(m, err=True))
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None


def _cv_params() -> list[click.Parameter]:
    """The train command's options, reused (not retyped) by ``cv``; --val and --resume do not
    apply: each fold makes its own validation split and finished folds are always kept."""
    params = []
    for p in train.params:
        if p.name in ("val", "resume"):
            continue
        if p.name == "out":
            p = copy.copy(p)
            p.help = "CV folder: fold_K/ checkpoints, held-out manifests, cv.json."
        params.append(p)
    return params


@cli.command(params=_cv_params())
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2))
@_choice(
    "--group-by",
    choices=["none", "source"],
    help="none: folds stratified by source x label; source: hold out whole sources.",
)
def cv(folds, group_by, **opts) -> None:
    """k-fold cross-validation: a training run and an evaluation per fold; writes OUT/cv.json."""
    from facegender.cv import cross_validate, format_summary

    cfg = train_config(opts)
    try:
        report = cross_validate(cfg, folds, group_by, log=lambda m: click.echo(m, err=True))
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    click.echo(format_summary(report))
    click.echo(f"per-fold metrics: {Path(cfg.out) / 'cv.json'}")


@cli.command()
@click.argument("data", nargs=-1, required=True)
@_model_option
@_choice("--format", "fmt", choices=["table", "json"])
@click.option("--out", type=click.Path(dir_okay=False), help="Write the result here too.")
@click.option("--no-cache", is_flag=True, help="Do not use the decoded-image cache.")
@_choice(
    "--face-crop",
    choices=CROPS,
    help="own: each image is one face crop. aligned: through predict's detector + alignment "
    "(the largest centred face; no face found: own crop, counted in the result).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    help="Write report.html (self-contained) and report.md with plots into this folder.",
)
def evaluate(data, model, fmt, out, no_cache, face_crop, report_dir) -> None:
    """Evaluate on labelled DATA (folders or CSV manifests), each image one face crop."""
    from facegender.evaluate import evaluate as run_eval
    from facegender.evaluate import format_table

    try:
        result = run_eval(
            list(data),
            model=model,
            cache=not no_cache,
            progress=fmt == "table",
            face_crop=face_crop,
        )
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    if report_dir and result.get("n"):
        from facegender.report import write_report

        paths = write_report(result, report_dir, model_dir=model.folder)  # lone .onnx: no record
        click.echo(f"report: {paths['html']}", err=True)
    result.pop("predictions", None)
    text = json.dumps(result, indent=2) if fmt == "json" else format_table(result)
    click.echo(text)
    if out:
        Path(out).write_text(text + "\n")
    if not result.get("n"):
        raise _Fail("no readable labelled images in DATA")


@cli.command()
@_model_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (default: model.onnx inside the checkpoint folder).",
)
@click.option("--opset", default=17, show_default=True, type=int)
@_choice(
    "--batch",
    choices=["dynamic", "fixed"],
    help="Dynamic batch axis, or fixed at the example's batch of 2.",
)
@click.option(
    "--quantize",
    is_flag=True,
    help="Also write an int8 model (OUT with .int8.onnx) calibrated on --calib-data.",
)
@click.option(
    "--calib-data",
    multiple=True,
    help="Face-crop folders/CSVs for int8 calibration (repeatable; needed with --quantize).",
)
@click.option(
    "--float16-weights",
    is_flag=True,
    help="Store the weights as float16 (half the file; arithmetic stays float32).",
)
def export(model, out, opset, batch, quantize, calib_data, float16_weights) -> None:
    """Export a checkpoint to ONNX with its preprocessing config in the metadata."""
    from facegender.export import export_onnx

    if quantize and not calib_data:
        raise _Fail("--quantize needs --calib-data (face crops like the ones it will see)")
    try:
        path = export_onnx(
            model,
            out,
            opset=opset,
            dynamic_batch=batch == "dynamic",
            float16_weights=float16_weights,
        )
    except ModuleNotFoundError as e:
        raise _Fail(f"export needs the train extra (facegender[train]): {e}") from None
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if quantize:
        from facegender.quantize import quantize_int8

        q = quantize_int8(path, list(calib_data))
        click.echo(f"wrote {q} ({q.stat().st_size / 1e6:.1f} MB)")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@_model_option
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--max-mb", default=10.0, show_default=True, type=float, help="Largest upload in MiB."
)
@click.option(
    "--threads",
    default=None,
    type=int,
    help="Classifier threads per worker (default: the cores divided between the workers).",
)
def serve(host, port, model, workers, max_mb, threads) -> None:
    """Serve the web page at / and the JSON API at /v1/predict (docs at /docs)."""
    try:
        from facegender.serve.run import serve as run_serve
    except ModuleNotFoundError as e:
        raise _Fail(f"serve needs the serve extra (facegender[serve]): {e}") from None
    run_serve(host, port, model, workers, max_bytes=int(max_mb * 2**20), threads=threads)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@_model_option
@click.option("--recursive", "-r", is_flag=True, help="Descend into sub-folders.")
@_choice(
    "--format",
    "fmt",
    choices=["table", "json", "jsonl", "csv"],
    help="csv: one row per face (one row for an image with no face or an error).",
)
@click.option(
    "--out",
    type=click.Path(),
    help="Write results here, not stdout (--engine ray: .parquet folder, .csv or .jsonl).",
)
@click.option("--annotate", type=click.Path(file_okay=False), help="Write labelled copies here.")
@click.option("--no-detect", is_flag=True, help="Each image is one face crop (no detection).")
@click.option("--min-face", default=20, show_default=True, type=int, help="Smallest face, px.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option(
    "--workers",
    default=None,
    type=int,
    help="Decode/detect processes (default: cores - 1 for folders, 0 for a few images); "
    "--engine ray: Ray workers, one CPU each (default: every CPU).",
)
@click.option(
    "--explain",
    type=click.Path(file_okay=False),
    help="Write each face's saliency heat map over the photo here (NAME.faceI.png): red regions "
    "supported the answer, blue ones argued against it (occlusion; ONNX runtime is enough).",
)
@click.option(
    "--explain-values", is_flag=True, help="With --explain: also NAME.faceI.json (the values)."
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.5, 1.0),
    default=None,
    help="Abstain: a face with max(P, 1-P) below this is labelled `uncertain` (its P(female) "
    "is still given). Default: always male or female.",
)
@click.option("--resume", is_flag=True, help="Skip images already in --out (jsonl/csv/parquet).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@_choice(
    "--engine",
    choices=["local", "ray"],
    help="ray: Ray Data workers on an embedded cluster or --address; PATHS may also be .txt "
    "lists and Parquet/CSV tables with a path column (facegender[scale], docs/scale.md).",
)
@click.option(
    "--address",
    default=None,
    help="--engine ray: an existing cluster (auto, HOST:6379, ray://HOST:10001).",
)
def predict(paths, model, recursive, fmt, out, annotate, no_detect, min_face, batch_size, workers,
            explain, explain_values, min_confidence, resume, progress, engine,
            address) -> None:  # fmt: skip
    """Find every face in the images at PATHS (files or folders) and tell male or female.

    Unreadable images become error rows; the exit code is 0 whenever every image was tried.
    """
    from facegender.predict_io import run_predict

    if engine == "ray":
        if min_confidence is not None or explain:
            raise _Fail("--min-confidence and --explain are not available with --engine ray")
        _predict_ray(paths, model, recursive, fmt, out, annotate, no_detect, min_face,
                     batch_size, workers, resume, progress, address)  # fmt: skip
        return
    if address:
        raise _Fail("--address is for --engine ray")
    if explain_values and not explain:
        raise _Fail("--explain-values needs --explain DIR")
    if out and Path(out).is_dir():
        raise _Fail(f"--out {out} is a folder; give a file name")
    try:
        run_predict(
            list(paths), model=model, fmt=fmt, out=out, recursive=recursive, annotate=annotate,
            detect=not no_detect, min_face=min_face, batch_size=batch_size, workers=workers,
            resume=resume, progress=progress, log=lambda m: click.echo(m, err=True),
            min_confidence=min_confidence, explain=explain, explain_values=explain_values,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)


def _predict_ray(paths, model, recursive, fmt, out, annotate, no_detect, min_face, batch_size,
                 workers, resume, progress, address) -> None:  # fmt: skip
    """``predict --engine ray``: same rows, written by facegender.predict_ray."""
    if not out:
        raise _Fail("--engine ray needs --out FILE (.parquet, .csv or .jsonl)")
    if annotate:
        raise _Fail("--annotate is not available with --engine ray")
    try:
        from facegender.predict_ray import output_format, run_predict_ray

        if fmt != "table" and fmt != output_format(out):
            raise ValueError(f"--format {fmt} does not match --out {out}; leave --format out")
        run_predict_ray(
            list(paths), out, model=model, recursive=recursive, detect=not no_detect,
            min_face=min_face, batch_size=batch_size, workers=workers, address=address,
            resume=resume, progress=progress, log=lambda m: click.echo(m, err=True),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)


@cli.command()
@_model_option
@click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False))
def demo(model, out) -> None:
    """Predict on the bundled example photos; write labelled copies to OUT."""
    from facegender.predict_io import run_predict

    photos = example_photos_dir()
    if not photos.is_dir():
        raise _Fail(f"no example photos at {photos}: the installation is incomplete")
    try:
        run_predict([str(photos)], model=model, annotate=out, workers=0, progress=False)
    except (ValueError, FileNotFoundError) as e:
        raise _Fail(str(e)) from None
    click.echo(f"annotated copies in {out}/")


def example_photos_dir() -> Path:
    """The demo's photos, shipped inside the package so the demo works from a wheel too."""
    from importlib import resources

    return Path(str(resources.files("facegender") / "photos"))


def main() -> None:
    cli(prog_name="facegender")


if __name__ == "__main__":
    main()
