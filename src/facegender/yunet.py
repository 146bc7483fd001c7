"""YuNet, libfacedetection's face detector, as an ONNX graph that onnxruntime runs.

Why a graph: the ``yuface`` wheel's library is compiled without AVX2 (its convolutions run on
128-bit SSE whatever the CPU), so a 512 x 384 frame took 57 ms on a 2-core AVX2 EPYC, most of
a photo's time (issue 16). onnxruntime picks its kernels from the CPU it runs on (AVX2, AVX-512,
VNNI) and brings no OpenMP runtime of its own to fight the classifier's threads.

The graph holds the same weights, read from the library that ``yuface`` ships (its layer table
``param_pConvInfo`` is an exported symbol), and the same arithmetic: raw 0-255 pixels, a 3 x 3
stride-2 stem, depthwise-separable units, a three-level feature pyramid with nearest upsampling,
and per level four heads (face score, objectness, box, five landmarks). :func:`decode` then does
what the library's ``detection_output`` does (score = sqrt(sigmoid(cls) x sigmoid(obj)), greedy
non-maximum suppression at IoU 0.45, integer pixels by truncation), so both give the same faces
and the same crops (``tests/test_yunet.py`` checks this against the library on many images).

The graph is built once, here, with ``python -m facegender.yunet`` (needs ``yuface`` and
``onnx``), and ships in the package as ``weights/yunet/yunet.onnx`` with libfacedetection's
BSD-3 licence beside it; at run time only onnxruntime and numpy are needed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
from pathlib import Path

import numpy as np

GRAPH_FILE = Path(__file__).resolve().parent / "weights" / "yunet" / "yunet.onnx"
STRIDES = (8, 16, 32)
PAD = 32  # the frame is zero-padded to a multiple of the coarsest stride
NMS_IOU = 0.45  # libfacedetection's overlap threshold
MAX_CANDIDATES = 1000  # its top-k before suppression
MAX_FACES = 256  # its result buffer's limit
# (stride, layer index of each head's pointwise conv) in the library's table: cls, box, kps, obj
_HEADS = ((8, (29, 35, 47, 41)), (16, (31, 37, 49, 43)), (32, (33, 39, 51, 45)))
_HEAD_CHANNELS = {"cls": 1, "box": 4, "kps": 10, "obj": 1}


class _ConvInfo(ctypes.Structure):
    """libfacedetection's ``ConvInfoStruct``: one 1x1 pointwise or 3x3 depthwise layer."""

    _fields_ = [
        ("channels", ctypes.c_int),
        ("num_filters", ctypes.c_int),
        ("is_depthwise", ctypes.c_bool),
        ("is_pointwise", ctypes.c_bool),
        ("with_relu", ctypes.c_bool),
        ("weights", ctypes.c_void_p),
        ("biases", ctypes.c_void_p),
    ]


def library_layers() -> list[tuple[np.ndarray, np.ndarray]]:
    """The 53 layers of the library yuface ships, as ONNX ``Conv`` weights and biases.

    The library stores a pointwise layer as ``[out][in]`` and a depthwise one as ``[tap][channel]``
    (taps row-major over the 3 x 3 window); layer 0 is the stem, a 3 x 3 stride-2 convolution
    stored as a pointwise one over 32 channels: the 27 values of the window, ``[tap][B, G, R]``,
    then 5 zeros. It is returned as ``[16, 3, 3, 3]`` over **RGB** input.
    """
    import yuface

    lib = ctypes.CDLL(os.path.join(os.path.dirname(yuface.__file__), "libfacedetection.so"))
    table = (_ConvInfo * 53).in_dll(lib, "param_pConvInfo")
    layers = []
    for info in table:
        c, n = info.channels, info.num_filters
        size = c * n if info.is_pointwise else 9 * c
        w = np.ctypeslib.as_array((ctypes.c_float * size).from_address(info.weights)).copy()
        b = np.ctypeslib.as_array((ctypes.c_float * n).from_address(info.biases)).copy()
        if info.is_pointwise:
            w = w.reshape(n, c, 1, 1)
        else:
            w = np.ascontiguousarray(w.reshape(9, c).T).reshape(c, 1, 3, 3)
        layers.append((w, b))
    stem = layers[0][0][:, :27, 0, 0].reshape(16, 3, 3, 3)  # [out, ky, kx, BGR]
    layers[0] = (np.ascontiguousarray(stem[..., ::-1].transpose(0, 3, 1, 2)), layers[0][1])
    return layers


class _GraphBuilder:
    """Appends ONNX nodes and initialisers; each method returns its output's name."""

    def __init__(self, layers):
        self.layers, self.nodes, self.inits, self._n = layers, [], [], 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, i: int, relu: bool, stride: int = 1) -> str:
        from onnx import numpy_helper

        w, b = self.layers[i]
        names = [f"layer{i}_w", f"layer{i}_b"]
        for a, n in zip((w, b), names, strict=True):
            self.inits.append(numpy_helper.from_array(a.astype(np.float32), n))
        k = w.shape[-1]
        group = w.shape[0] if w.shape[1] == 1 and k == 3 and i != 0 else 1
        pad = k // 2
        y = self.node(
            "Conv",
            [x, *names],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=group,
        )
        return self.node("Relu", [y]) if relu else y

    def dp(self, x: str, i: int, relu: bool = True) -> str:
        """Pointwise then depthwise (the library's ``convolutionDP``), ReLU after the second."""
        return self.conv(self.conv(x, i, False), i + 1, relu)

    def unit(self, x: str, i: int) -> str:
        """Two DP pairs (``convolution4layerUnit``)."""
        return self.dp(self.dp(x, i), i + 2)

    def pool(self, x: str) -> str:
        return self.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def up_add(self, coarse: str, fine: str) -> str:
        if "up_scales" not in {t.name for t in self.inits}:
            from onnx import numpy_helper

            scales = np.array([1, 1, 2, 2], np.float32)
            self.inits.append(numpy_helper.from_array(scales, "up_scales"))
        up = self.node("Resize", [coarse, "", "up_scales"], mode="nearest")
        return self.node("Add", [up, fine])


def build_graph(layers: list[tuple[np.ndarray, np.ndarray]]):
    """The network of ``objectdetect_cnn`` over ``image`` (1 x 3 x H x W, RGB 0-255, H and W
    multiples of 32), with outputs ``{cls,obj,box,kps}_{8,16,32}`` (1 x C x H/s x W/s)."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(layers)
    x = g.dp(g.conv("image", 0, True, stride=2), 1)
    x = g.unit(g.unit(g.pool(x), 3), 7)
    f8 = g.unit(g.pool(x), 11)
    f16 = g.unit(g.pool(f8), 15)
    f32 = g.dp(g.unit(g.pool(f16), 19), 27)
    f16 = g.dp(g.up_add(f32, f16), 25)
    f8 = g.dp(g.up_add(f16, f8), 23)
    outputs = []
    for (stride, heads), feat in zip(_HEADS, (f8, f16, f32), strict=True):
        for role, i in zip(("cls", "box", "kps", "obj"), heads, strict=True):
            y = g.dp(feat, i, relu=False)
            name = f"{role}_{stride}"
            g.nodes.append(helper.make_node("Identity", [y], [name]))
            shape = [1, _HEAD_CHANNELS[role], f"height/{stride}", f"width/{stride}"]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])
    graph = helper.make_graph(g.nodes, "yunet", [image], outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.producer_name = "facegender.yunet (weights: libfacedetection, BSD-3)"
    return model


def _nms(boxes: np.ndarray, iou: float) -> list[int]:
    """Greedy suppression over boxes sorted by score, with the library's overlap rule."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in range(len(boxes)):
        if keep:
            k = np.asarray(keep)
            iw = np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0])
            ih = np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1])
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
            if np.any(inter / (area[k] + area[i] - inter) > iou):
                continue
        keep.append(i)
        if len(keep) == MAX_FACES:
            break
    return keep


def decode(outputs: dict[str, np.ndarray], min_score: float) -> np.ndarray:
    """Faces as rows ``score, x, y, w, h, 10 landmark coordinates`` (float32; every value but
    the score truncated to whole pixels, as the library returns them), best first."""
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        cls, obj, box, kps = (outputs[f"{r}_{stride}"][0] for r in ("cls", "obj", "box", "kps"))
        rows, cols = cls.shape[1:]
        ys, xs = np.mgrid[0:rows, 0:cols]
        prior = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) * stride
        s = 1.0 / (1.0 + np.exp(-np.clip(np.stack([cls[0], obj[0]]), -88.0, 88.0)))
        scores.append(np.sqrt(s[0] * s[1]).ravel())
        reg = box.reshape(4, -1).T
        centre, size = reg[:, :2] * stride + prior, np.exp(reg[:, 2:]) * stride
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], 1))
        points.append(kps.reshape(5, 2, -1).transpose(2, 0, 1) * stride + prior[:, None])
    score, box = np.concatenate(scores), np.concatenate(boxes)
    above = np.flatnonzero(score >= min_score)
    above = above[np.argsort(-score[above], kind="stable")][:MAX_CANDIDATES]
    keep = above[_nms(box[above], NMS_IOU)]
    pts = np.concatenate(points).reshape(-1, 10)[keep]
    b = box[keep]
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return np.concatenate([score[keep, None], np.trunc(xywh), np.trunc(pts)], 1, dtype=np.float32)


class YuNetGraph:
    """The shipped graph in an onnxruntime session: ``rows(rgb) -> decode(...)`` rows."""

    def __init__(self, threads: int = 1, spin: bool = False, path: str | Path = GRAPH_FILE):
        import onnxruntime as ort

        from facegender.runtime import session_options

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing; rebuild it: python -m facegender.yunet")
        opts = session_options(threads, spin=spin)
        # frames come in many sizes: a memory plan cached per shape only grows the process
        # (+6 MB over 160 frames of 4 sizes with it, +0 without, at the same speed)
        opts.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self.session.get_outputs()]

    def rows(self, rgb: np.ndarray, min_score: float) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = np.zeros((1, 3, -(-h // PAD) * PAD, -(-w // PAD) * PAD), np.float32)
        x[0, :, :h, :w] = rgb.transpose(2, 0, 1)
        out = dict(zip(self._names, self.session.run(self._names, {"image": x}), strict=True))
        return decode(out, min_score)


def main(argv: list[str] | None = None) -> None:
    """Write the graph from the installed yuface's weights (a one-off, for maintainers)."""
    import onnx

    ap = argparse.ArgumentParser(prog="python -m facegender.yunet", description=main.__doc__)
    ap.add_argument("--out", type=Path, default=GRAPH_FILE)
    args = ap.parse_args(argv)
    model = build_graph(library_layers())
    onnx.checker.check_model(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
