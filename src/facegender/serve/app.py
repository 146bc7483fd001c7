"""The web service: ``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``, the page at ``/``.

The model is loaded once, in the lifespan, and every request is answered by the one
:class:`facegender.predict.Predictor`. Decoding, detection and the classifier run in worker
inference threads of their own (``concurrency`` of them, 1 by default), so the event loop keeps
answering health checks. Always the same long-lived threads: the detector sees one caller, and
glibc does not grow a new malloc arena for every thread of a pool, which is what made the resident
memory creep up under load. Every error is JSON ``{"error": "..."}`` (with ``error_code`` when an
image could not be read); the answers' shapes are declared in :mod:`facegender.serve.schemas`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegender import __version__
from facegender.abstain import relabel
from facegender.cpu import classifier_threads
from facegender.serve.model_info import model_summary
from facegender.serve.schemas import HealthOut, ModelOut, PredictionOut, error_responses
from facegender.serve.upload import (
    FIELD,
    UploadError,
    query_flag,
    query_int,
    query_min_confidence,
    read_upload,
)

log = logging.getLogger("facegender.serve")

DEFAULT_MAX_BYTES = 10 * 2**20
# Images decoded and classified at once per worker process. 1 because the detector (yuface)
# deadlocks when first called from two threads at once and is not documented as thread-safe;
# the detector and classifier use several cores each anyway, and --workers scales further.
DEFAULT_CONCURRENCY = 1

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                    "required": [FIELD],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {
            "name": "min_confidence",
            "in": "query",
            "required": False,
            "schema": {"type": "number", "minimum": 0.5, "maximum": 1.0},
            "description": "Abstain: faces with max(P, 1-P) below this are labelled "
            "'uncertain' (P(female) still given). Default: always male or female.",
        }
    ],
}


_EXPLAIN_DOC: dict[str, Any] = {
    **_UPLOAD_DOC,
    "parameters": [
        *_UPLOAD_DOC["parameters"],
        {"name": "face", "in": "query", "required": False, "schema": {"type": "integer"}},
        {"name": "values", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "png", "in": "query", "required": False, "schema": {"type": "boolean"}},
    ],
}
# Longest side of the overlay pictures /v1/explain returns (the page shows them at that size).
EXPLAIN_MAX_SIDE = 640


def static_dir() -> Path:
    """The page's HTML, JS and CSS, shipped inside the package (no CDN)."""
    return Path(str(resources.files("facegender") / "static"))


# HTTP status of a predictor error row by its error_code (never by the wording of the message):
# the client's fault (400) unless the image is too big, not an image, or our side broke.
STATUS_BY_CODE = {
    "too_large": 413,
    "not_image": 415,
    "detection_failed": 500,
    "worker_crashed": 500,
    "prediction_failed": 500,
}


def error_status(code: str | None) -> int:
    return STATUS_BY_CODE.get(code or "", 400)


def _error(
    status: int, message: str, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body = {"error": message} if code is None else {"error": message, "error_code": code}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    predictor=None,
    model: str | Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    concurrency: int = DEFAULT_CONCURRENCY,
    threads: int | None = None,
    processes: int = 1,
) -> FastAPI:
    """Build the app. ``predictor`` wins; else a Predictor for ``model`` is loaded at startup.

    ``threads``: classifier threads (None: this process's share of the cores, with ``processes``
    server processes each running ``concurrency`` inferences at once; see :mod:`facegender.cpu`).
    """
    if threads is None:
        threads = classifier_threads(processes=max(1, int(processes)) * max(1, int(concurrency)))

    def executor() -> ThreadPoolExecutor:
        if app.state.executor is None:
            app.state.executor = ThreadPoolExecutor(
                max(1, int(concurrency)), thread_name_prefix="facegender-infer"
            )
        return app.state.executor

    async def in_executor(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor(), fn, *args)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.predictor is None:
            from facegender.predict import Predictor

            app.state.predictor = await in_executor(lambda: Predictor(model=model, threads=threads))
        # One prediction before serving: the detector and classifier initialise here, in the
        # inference thread, instead of inside the first requests.
        await in_executor(app.state.predictor.predict, np.zeros((64, 64, 3), np.uint8))
        try:
            yield
        finally:
            executor().shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        title="facegender",
        version=__version__,
        description="Find the faces in a photo and tell whether each is male or female.",
        lifespan=lifespan,
        static_url="/static-docs",
    )
    app.state.predictor = predictor
    app.state.max_bytes = int(max_bytes)
    app.state.executor = None

    _add_error_handlers(app)
    _add_info_routes(app)
    _add_predict_routes(app, in_executor)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure answers in the one error shape (``_error``), never a bare trace."""

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, exc: UploadError):
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)  # 405: Allow

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return _error(422, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal server error")


def _add_info_routes(app: FastAPI) -> None:
    """The page, its static files, liveness and what model is loaded."""

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(static_dir() / "index.html")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/healthz", response_model=HealthOut)
    async def healthz():
        """Liveness: the model is loaded and the event loop answers."""
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/v1/model", response_model=ModelOut)
    async def model_info(request: Request):
        """The loaded checkpoint: name, version, calibration and validation metrics summary."""
        p = request.app.state.predictor
        detector = getattr(p.cropper, "detector_name", None)
        backend = getattr(p.classifier, "backend", None)
        return JSONResponse(model_summary(p.classifier.config, detector, backend))


def _add_predict_routes(app: FastAPI, in_executor) -> None:
    """The two upload endpoints; inference runs off the event loop (``in_executor``)."""

    @app.post(
        "/v1/predict",
        response_model=PredictionOut,
        responses=error_responses(400, 413, 415, 500),
        openapi_extra=_UPLOAD_DOC,
    )
    async def predict(request: Request):
        """Every face in the uploaded image: box [x, y, w, h], gender and P(female).

        Send multipart/form-data with field ``file``, or the raw bytes with an ``image/*``
        content type. The answer is the same object ``facegender predict --format json`` gives.
        """
        min_confidence = query_min_confidence(request)
        data = await read_upload(request, request.app.state.max_bytes)
        result = await in_executor(request.app.state.predictor.predict, data)
        if result.status == "error":
            code = result.error_code
            return _error(error_status(code), result.error or "cannot decode", code)
        return JSONResponse(relabel(result, min_confidence).to_dict())  # PredictionOut fields

    @app.post(
        "/v1/explain", responses=error_responses(400, 413, 415, 500), openapi_extra=_EXPLAIN_DOC
    )
    async def explain(request: Request):
        """Each face's saliency heat map (occlusion, forward passes only) over the photo.

        Same upload as ``/v1/predict``. Query: ``face=I`` explains only face I (faster),
        ``values=false`` leaves out the grid of values, ``png=false`` the picture,
        ``min_confidence`` as for predict. Each face has ``overlay_png`` (the photo, at most
        640 px, with that face's heat map: red supported the answer, blue argued against it,
        base64 PNG) and ``saliency`` (the grid in logit units and where its cells are).
        """
        min_confidence = query_min_confidence(request)
        face = query_int(request, "face")
        want_values, want_png = query_flag(request, "values"), query_flag(request, "png")
        data = await read_upload(request, request.app.state.max_bytes)
        e = await in_executor(request.app.state.predictor.explain, data, False, None, face)
        r = relabel(e.result, min_confidence)
        if r.status == "error":
            return _error(error_status(r.error_code), r.error or "cannot decode", r.error_code)
        if face is not None and not e.faces and r.faces:
            return _error(400, f"face={face}: the image has {len(r.faces)} face(s), 0-based")
        faces = await in_executor(
            lambda: [
                f.to_dict(e.image if want_png else None, want_values, EXPLAIN_MAX_SIDE)
                for f in e.faces
            ]
        )
        return {**{k: v for k, v in r.to_dict().items() if k != "faces"}, "faces": faces}


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one per worker process when ``--workers`` > 1)."""
    threads = os.environ.get("FACEGENDER_THREADS")
    return create_app(
        model=os.environ.get("FACEGENDER_MODEL") or None,
        max_bytes=int(os.environ.get("FACEGENDER_MAX_BYTES", DEFAULT_MAX_BYTES)),
        concurrency=int(os.environ.get("FACEGENDER_CONCURRENCY", DEFAULT_CONCURRENCY)),
        threads=int(threads) if threads else None,
        processes=int(os.environ.get("FACEGENDER_PROCESSES", 1)),
    )
