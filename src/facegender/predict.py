"""The one predictor: photo in, every face's box and gender out. CLI, API and service all use it.

Two stages, so folders can be processed at scale:

1. :class:`FaceCropper` (numpy, Pillow and the detector only, no model): decode the image, find
   the faces, cut each one out like a training crop (:mod:`facegender.align`) and make it model
   input (:func:`facegender.preprocess.face_array`). It is picklable and runs in worker processes.
2. :class:`Predictor` batches the crops through the classifier from
   :func:`facegender.classifier.load_classifier` and builds one :class:`ImageResult` per image.

A bad image never raises: it becomes a result with ``status="error"`` and a readable reason, and
the batch goes on. Memory stays flat for any number of inputs: sources are consumed lazily, at
most a few batches are in flight, and results are yielded in input order as they are ready.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facegender.abstain import gender_label
from facegender.cpu import DETECTOR_THREADS, classifier_threads, usable_cores
from facegender.detect import DEFAULT_MAX_SIDE
from facegender.preprocess import (
    DECODE_ERRORS,
    ImageDecodeError,
    PreprocessConfig,
    crop_to_image,
    face_array,
    open_image,
)

# The ``error_code`` of an error row: why the image could not be read (preprocess), or one of
# these. ``no_face`` is a status, not an error.
ERROR_CODES = (*DECODE_ERRORS, "detection_failed", "worker_crashed", "prediction_failed")
CRASHED = "worker process crashed on this image"


@dataclass
class Face:
    """One face: ``box`` = [x, y, w, h] in pixels of the (EXIF-rotated) image."""

    box: list[int]
    score: float
    gender: str
    female_probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "gender": self.gender,
            "female_probability": round(float(self.female_probability), 4),
        }


@dataclass
class _ImageStatus:
    """Where an image stands: ``status`` ok, no_face or error (the reason is in ``error``, its
    kind in ``error_code``, one of :data:`ERROR_CODES`)."""

    path: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    error_code: str | None = field(default=None, kw_only=True)


@dataclass
class ImageResult(_ImageStatus):
    """What happened to one image: its status and every face found."""

    faces: list[Face] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "error_code": self.error_code,
            "width": self.width,
            "height": self.height,
            "faces": [f.to_dict() for f in self.faces],
        }


@dataclass
class Crops(_ImageStatus):
    """Stage-1 output for one image: face boxes, scores and model-ready ``uint8`` crops."""

    boxes: list[list[int]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    arrays: np.ndarray | None = None  # K x S x S x C uint8
    # K 2 x 3 matrices from each crop's model-input pixels to the photo (facegender.explain)
    transforms: list[np.ndarray] = field(default_factory=list)


def _int_box(box, width: int, height: int) -> list[int]:
    x, y, w, h = box
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    return [int(x0), int(y0), int(max(0, x1 - x0)), int(max(0, y1 - y0))]


class FaceCropper:
    """Decode, detect and crop: everything before the classifier (picklable, model-free).

    ``detect=False`` treats the whole image as one face crop, exactly like evaluation does.
    Faces narrower than ``min_face`` pixels (in the original image) are ignored.
    """

    def __init__(
        self,
        preprocess: PreprocessConfig,
        detect: bool = True,
        min_face: int = 20,
        detector: str = "yunet",
        detector_kwargs: dict | None = None,
    ):
        self.preprocess = preprocess
        self.detect = detect
        self.min_face = int(min_face)
        self.detector_name = detector
        self.detector_kwargs = dict(detector_kwargs or {})
        self._detector = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}  # each process builds its own detector

    @property
    def detector(self):
        if self._detector is None:
            from facegender.detect import get_detector

            self._detector = get_detector(self.detector_name, **self.detector_kwargs)
        return self._detector

    def __call__(self, image: Any, bgr: bool = False, path: str | None = None) -> Crops:
        if path is None and isinstance(image, str | Path):
            path = str(image)
        try:
            img = open_image(image, bgr=bgr)
        except ImageDecodeError as e:
            return Crops(path, "error", str(e), error_code=e.code)
        except Exception as e:  # an unexpected decoder failure is still one bad image
            msg = f"cannot decode: {type(e).__name__}: {e}"
            return Crops(path, "error", msg, error_code="decode_failed")
        w, h = img.size
        pre = self.preprocess
        if not self.detect:
            array = face_array(img, pre)[None]
            return Crops(path, "ok", None, w, h, [[0, 0, w, h]], [1.0], array,
                         [crop_to_image(w, h, pre)])  # fmt: skip
        from facegender.align import align_face, model_to_image

        try:
            found = [d for d in self.detector.detect(img) if min(d.box[2:]) >= self.min_face]
            boxes = [_int_box(d.box, w, h) for d in found]
            arrays = [face_array(align_face(img, d), pre) for d in found]
        except Exception as e:
            msg = f"face detection failed: {type(e).__name__}: {e}"
            return Crops(path, "error", msg, w, h, error_code="detection_failed")
        if not found:
            return Crops(path, "no_face", None, w, h)
        maps = [model_to_image(d, pre.crop, pre.image_size) for d in found]
        return Crops(path, "ok", None, w, h, boxes, [d.score for d in found], np.stack(arrays),
                     maps)  # fmt: skip


# -- worker processes ---------------------------------------------------------------------------

_WORKER_CROPPER: FaceCropper | None = None


def _worker_init(cropper: FaceCropper) -> None:
    global _WORKER_CROPPER
    _WORKER_CROPPER = cropper


def _worker_run(item: tuple[Any, bool, str | None]) -> Crops:
    return _WORKER_CROPPER(*item)


def _new_pool(cropper: FaceCropper, workers: int) -> ProcessPoolExecutor:
    # spawn: forking a process that has loaded torch/OpenMP can deadlock; workers need no model.
    return ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(cropper,)
    )


def _parallel_crops(
    cropper: FaceCropper, items: Iterator[tuple[Any, bool, str | None]], workers: int
) -> Iterator[Crops]:
    """Run ``cropper`` in ``workers`` processes, in order, with a bounded number in flight."""
    limit = workers * 8
    window: deque = deque()
    pool = _new_pool(cropper, workers)
    try:
        while True:
            while len(window) < limit and (it := next(items, None)) is not None:
                window.append((it, pool.submit(_worker_run, it)))
            if not window:
                return
            try:
                crops = window[0][1].result()
            except BrokenProcessPool:
                # Some image in flight crashed its process; which one, the pool cannot say.
                pool.shutdown(wait=True, cancel_futures=True)
                yield from _isolate(cropper, list(window))
                window.clear()
                pool = _new_pool(cropper, workers)
                continue
            window.popleft()
            yield crops
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _threaded_crops(
    cropper: FaceCropper, items: Iterator[tuple[Any, bool, str | None]], threads: int, ahead: int
) -> Iterator[Crops]:
    """Run ``cropper`` on ``threads`` threads, in order, up to ``ahead`` images in flight.

    Decoding, resizing and detection run in C with the GIL released, so the next batch is cut
    while the classifier works on this one: on 2 cores 1.5x the faces/s of doing them in turn
    (``benchmarks/throughput.py --predictor-only``). Worker processes would pay for pickling
    and start-up and fared worse. A bad image is still one error row: the cropper catches it.
    """
    window: deque = deque()
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="facegender-crop") as pool:
        try:
            while True:
                while len(window) < ahead and (it := next(items, None)) is not None:
                    window.append(pool.submit(cropper, *it))
                if not window:
                    return
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


def _isolate(cropper: FaceCropper, window: list) -> Iterator[Crops]:
    """After a crash: keep the results that were finished and re-run the other in-flight images
    one at a time in a process of their own, so only an image that crashes a process by itself
    becomes an error row (and no good image is blamed for it)."""
    pool = None
    try:
        for it, fut in window:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                yield fut.result()
                continue
            pool = pool or _new_pool(cropper, 1)
            try:
                yield pool.submit(_worker_run, it).result()
            except BrokenProcessPool:
                pool.shutdown(wait=True)
                pool = None
                yield Crops(_item_path(it), "error", CRASHED, error_code="worker_crashed")
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _item_path(item: tuple[Any, bool, str | None]) -> str | None:
    source, _, path = item
    if path is None and isinstance(source, str | Path):
        return str(source)
    return path


# -- the predictor ------------------------------------------------------------------------------


class Predictor:
    """Find every face in an image and classify it.

    ``model``: checkpoint folder or ``.onnx`` file (None: the bundled model). ``detect=False``
    treats each image as one face crop (box = whole image, score 1.0). ``min_face``: smallest face
    width in pixels. ``workers``: default decode/detect processes for :meth:`predict_iter` (0: in
    this process). ``threads``: classifier threads (None: the cores the workers leave,
    :func:`facegender.cpu.classifier_threads`; 0: onnxruntime's choice); in this process as many
    threads decode, detect and align the next images meanwhile. ``detector_threads``:
    onnxruntime threads per detection (1; 0: onnxruntime's default). ``max_side``: frames are
    downscaled to this longest side before detection. ``min_confidence``: a face whose
    max(p, 1 - p) is below it is labelled ``"uncertain"`` (:mod:`facegender.abstain`; None:
    always male or female).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        detect: bool = True,
        min_face: int = 20,
        threads: int | None = None,
        *,
        backend: str = "auto",
        classifier=None,
        detector: str = "yunet",
        max_side: int = DEFAULT_MAX_SIDE,
        min_score: float = 0.5,
        batch_size: int = 64,
        workers: int = 0,
        detector_threads: int = DETECTOR_THREADS,
        min_confidence: float | None = None,
    ):
        from facegender.abstain import check_min_confidence

        self.min_confidence = check_min_confidence(min_confidence)
        if classifier is None:
            from facegender.classifier import load_classifier

            if threads is None:
                threads = classifier_threads(workers)
            classifier = load_classifier(model, backend=backend, threads=threads)
        self.classifier = classifier
        # in-process cropping gets the cores the classifier was given (see _threaded_crops)
        self.crop_threads = int(threads) if threads else classifier_threads(workers)
        self.batch_size = max(1, int(batch_size))
        self.workers = int(workers)
        self.cropper = FaceCropper(
            classifier.preprocess,
            detect=detect,
            min_face=min_face,
            detector=detector,
            detector_kwargs={
                "max_side": max_side,
                "min_score": min_score,
                "threads": detector_threads,
            },
        )

    def predict(self, image: Any, bgr: bool = False, path: str | None = None) -> ImageResult:
        """One image (path, bytes, PIL image or numpy array; RGB unless ``bgr=True``)."""
        return self._classify([self.cropper(image, bgr=bgr, path=path)])[0]

    def explain(
        self, image: Any, bgr: bool = False, path: str | None = None, face: int | None = None
    ):
        """Each face's prediction and occlusion saliency map (:mod:`facegender.explain`), on the
        crop the classifier saw, with what it takes to paint it over the photo. ``face``: only
        that face (by index in the result). Forward passes only: works on the ONNX runtime."""
        from facegender.explain import Explanation, FaceExplanation, saliency

        if path is None and isinstance(image, str | Path):
            path = str(image)
        try:
            img = open_image(image, bgr=bgr)
        except ImageDecodeError as e:
            return Explanation(ImageResult(path, "error", str(e), error_code=e.code), None)
        crops = self.cropper(img, path=path)
        result = self._classify([crops])[0]
        out = Explanation(result, img)
        arrays = crops.arrays if crops.arrays is not None else []
        for i, (f, a, m) in enumerate(zip(result.faces, arrays, crops.transforms, strict=True)):
            if face is None or i == face:
                out.faces.append(FaceExplanation(f, saliency(self.classifier, a), m, i))
        return out

    def predict_batch(
        self,
        images: Iterable[Any],
        bgr: bool = False,
        paths: Iterable[str | None] | None = None,
        workers: int | None = None,
    ) -> list[ImageResult]:
        """A list of images; the results come back in the same order."""
        return list(self.predict_iter(images, bgr=bgr, paths=paths, workers=workers))

    def predict_iter(
        self,
        images: Iterable[Any],
        bgr: bool = False,
        paths: Iterable[str | None] | None = None,
        workers: int | None = None,
    ) -> Iterator[ImageResult]:
        """Stream results in input order; ``images`` is consumed lazily (folders of any size)."""
        path_iter = iter(paths) if paths is not None else None
        items = (
            (img, bgr, next(path_iter, None) if path_iter is not None else None) for img in images
        )
        workers = self.workers if workers is None else int(workers)
        if workers > 0:
            crops_iter = _parallel_crops(self.cropper, items, workers)
        else:
            ahead = 2 * self.batch_size
            crops_iter = _threaded_crops(self.cropper, items, self.crop_threads, ahead)
        pending: list[Crops] = []
        n_faces = 0
        for crops in crops_iter:
            pending.append(crops)
            n_faces += len(crops.boxes)
            if n_faces >= self.batch_size or len(pending) >= self.batch_size:
                yield from self._classify(pending)
                pending, n_faces = [], 0
        if pending:
            yield from self._classify(pending)

    def _classify(self, batch: list[Crops]) -> list[ImageResult]:
        arrays = [c.arrays for c in batch if c.arrays is not None and len(c.arrays)]
        probs = (
            iter(self.classifier.probabilities(np.concatenate(arrays)).tolist()) if arrays else None
        )
        out = []
        for c in batch:
            faces = []
            for box, score in zip(c.boxes, c.scores, strict=True):
                p = float(next(probs))
                faces.append(Face(box, float(score), gender_label(p, self.min_confidence), p))
            out.append(
                ImageResult(
                    c.path, c.status, c.error, c.width, c.height, faces, error_code=c.error_code
                )
            )
        return out


def default_workers() -> int:
    """Decode/detect processes for folders: the cores left after the classifier's process."""
    return max(1, min(8, usable_cores() - 1))
