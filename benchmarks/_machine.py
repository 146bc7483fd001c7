"""What every speed benchmark records about the machine, so figures travel between CPUs.

A figure in ms means little without the CPU it came from, its instruction flags (AVX2, AVX-512,
BF16, VNNI, AMX), the threads used and how busy the machine was. And because clocks, turbo and
neighbours differ even between machines of one kind, each run also times a **reference
workload** (a fixed float32 convolution pair in onnxruntime on one thread, the same kind of work
as the classifier): dividing a figure by it gives a ratio that can be compared across machines
and across runs on a shared machine.

    from _machine import machine
    result["machine"] = machine(threads={"classifier": 2, "detector": 1})
"""

from __future__ import annotations

import os
import platform
import statistics
import time

from facegender.cpu import cpu_info, flags_of_interest, usable_cores

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The reference: 1 x 32 x 64 x 64 -> conv 3x3 (32 -> 64) -> ReLU -> conv 3x3 (64 -> 64).
REF_SHAPE, REF_MID, REF_OUT = (1, 32, 64, 64), 64, 64
REF_MACS = 64 * 64 * 9 * (32 * REF_MID + REF_MID * REF_OUT)


def _reference_graph() -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(
        rng.standard_normal((REF_MID, REF_SHAPE[1], 3, 3)).astype(np.float32) * 0.05, "w1"
    )
    w2 = numpy_helper.from_array(
        rng.standard_normal((REF_OUT, REF_MID, 3, 3)).astype(np.float32) * 0.05, "w2"
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(REF_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def reference_ms(repeats: int = 30) -> dict:
    """Median ms of the fixed float32 conv workload on one onnxruntime thread (no spinning)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(_reference_graph(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(REF_SHAPE).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(1000 * (time.perf_counter() - t0))
    ms = statistics.median(times)
    return {
        "what": "onnxruntime fp32 conv3x3 32->64->64 on 1x32x64x64, 1 thread, median",
        "ms": round(ms, 3),
        "gmac_per_s": round(REF_MACS / ms / 1e6, 1),
        "repeats": repeats,
    }


def machine(threads: dict | None = None, reference: bool = True) -> dict:
    """CPU model and flags, cores, thread settings, load, versions and the reference figure."""
    import numpy as np

    info = cpu_info()
    out = {
        "cpu": info["model"],
        "flags": flags_of_interest(),
        "cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": dict(threads or {}),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "nice": os.nice(0),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if reference:
        out["reference"] = reference_ms()
    return out


def describe(m: dict) -> str:
    """One line for the benchmark's printout."""
    flags = ",".join(k for k, v in m["flags"].items() if v) or "none of interest"
    ref = f"; reference {m['reference']['ms']:.2f} ms" if "reference" in m else ""
    return f"CPU {m['cpu']} ({flags}), {m['usable_cores']} cores, load {m['loadavg'][0]}{ref}"
