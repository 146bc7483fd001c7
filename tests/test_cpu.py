"""How the cores are shared (facegender.cpu) and what the CPU is said to have."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import facegender.cpu
from facegender.cpu import classifier_threads, cpu_info, flags_of_interest

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
ZEN4 = "model name\t: AMD EPYC 9B14\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(
    ("text", "fast"), [(AVX2_ONLY, False), (ZEN4, True), (SAPPHIRE, True), ("", False)]
)
def test_bf16_only_where_the_cpu_computes_it(text, fast):
    """--precision auto must not pick bf16 on an AVX2-only CPU (12x slower there)."""
    from facegender.train import cpu_has_fast_bf16

    assert cpu_has_fast_bf16(text) is fast


def test_cpu_info_reads_model_and_flags():
    info = cpu_info(AVX2_ONLY)
    assert info["model"] == "AMD EPYC 7B12" and "avx2" in info["flags"]
    assert flags_of_interest(AVX2_ONLY) == {
        "avx2": True, "avx512f": False, "avx512_bf16": False, "avx512_vnni": False,
        "avx_vnni": False, "amx_bf16": False, "amx_int8": False, "amx_tile": False,
    }  # fmt: skip
    assert flags_of_interest(SAPPHIRE)["amx_bf16"] and not flags_of_interest(ZEN4)["amx_bf16"]


@pytest.mark.parametrize(
    ("cores", "workers", "processes", "threads"),
    [(2, 0, 1, 2), (2, 1, 1, 1), (2, 0, 2, 1), (2, 3, 1, 1), (8, 3, 1, 5), (8, 0, 3, 2)],
)
def test_classifier_gets_the_cores_the_workers_leave(
    monkeypatch, cores, workers, processes, threads
):
    monkeypatch.setattr(facegender.cpu, "usable_cores", lambda: cores)
    assert classifier_threads(workers, processes) == threads


def test_usable_cores_follows_the_affinity_mask():
    assert facegender.cpu.usable_cores() == len(os.sched_getaffinity(0))


def test_library_detector_runs_one_openmp_thread_on_every_runtime_it_may_use():
    """OpenMP settings are per thread and per runtime: a detection from a new thread (the
    service's inference thread) must run on one thread, on yuface's libgomp and on PyTorch's
    (loaded first into the global scope, the detector's loops bind to it: training's decode
    workers), and leave the caller's own settings as they were."""
    pytest.importorskip("yuface")
    torch = pytest.importorskip("torch")
    from facegender.detect import LibYuNetDetector

    torch.set_num_threads(2)
    det = LibYuNetDetector()
    assert len(det._omp) == 2  # yuface's runtime and torch's
    seen = {}
    real = det._fn

    def spy(*args):
        seen["during"] = [get() for get, _ in det._omp]
        return real(*args)

    det._fn = spy
    t = threading.Thread(target=det.detect, args=(np.zeros((120, 160, 3), np.uint8),))
    t.start()
    t.join()
    assert seen["during"] == [1, 1]
    det.detect(np.zeros((120, 160, 3), np.uint8))  # in this thread: restored afterwards
    assert torch.get_num_threads() == 2
    assert LibYuNetDetector(threads=0)._omp and not LibYuNetDetector(threads=0).threads


def test_predictor_and_service_size_the_classifier_from_the_workers(monkeypatch):
    """predict --workers W: cores - W classifier threads; serve --workers N: cores / N each."""
    import facegender.classifier
    import facegender.predict
    from facegender.predict import Predictor

    asked = []

    class Fake:
        preprocess = None

    def fake_load(model=None, backend="auto", threads=None):
        asked.append(threads)
        return Fake()

    monkeypatch.setattr(facegender.cpu, "usable_cores", lambda: 4)
    monkeypatch.setattr(facegender.classifier, "load_classifier", fake_load)
    Predictor(workers=1)
    Predictor()
    Predictor(workers=1, threads=3)
    assert asked == [3, 4, 3]

    from fastapi.testclient import TestClient

    from facegender.serve.app import create_app

    made = []

    class FakePredictor:
        def __init__(self, model=None, threads=None):
            made.append(threads)

        def predict(self, image):
            return None

    monkeypatch.setattr(facegender.predict, "Predictor", FakePredictor)
    with TestClient(create_app(processes=2)):
        pass
    with TestClient(create_app(processes=1, concurrency=2, threads=None)):
        pass
    assert made == [2, 2]


def test_classifier_pool_sleeps_between_runs_unless_asked_to_spin():
    """A spinning onnxruntime pool takes a core from the detector and the neighbours."""
    from facegender.runtime import session_options

    key = "session.intra_op.allow_spinning"
    assert session_options(2).get_session_config_entry(key) == "0"
    assert session_options(2, spin=True).get_session_config_entry(key) == "1"
