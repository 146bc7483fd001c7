"""The evaluation report's figures, each returned as PNG bytes (matplotlib, rendered by Agg).

Bytes rather than files so the same figure can be written beside ``report.md`` and embedded in
``report.html`` as a data URI. Figures are built with ``matplotlib.figure.Figure``, not pyplot, so
making a report never switches the backend of a notebook or an application that imports us.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from facegender.labels import LABELS

GOOD, BAD = "#1a7f37", "#cf222e"


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def to_png(fig, dpi: int = 100) -> bytes:
    """Render ``fig`` as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]]) -> bytes:
    """Counts and row percentages; rows are the truth, columns the prediction."""
    m = np.asarray(matrix, dtype=float)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = _subplots(figsize=(4.2, 3.6))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            colour = "white" if rows[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(m[i, j])}\n{rows[i, j]:.1%}", ha="center", va="center", c=colour)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=LABELS,
        yticklabels=LABELS,
        xlabel="predicted",
        ylabel="truth",
        title="Confusion matrix",
    )
    return to_png(fig)


def _unit_square_curve(fig, ax, title: str, xlabel: str, ylabel: str, legend: str) -> bytes:
    """Finish a curve drawn on [0, 1] x [0, 1] (ROC, PR) the same way and return its PNG."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc=legend)
    return to_png(fig)


def roc_png(y: np.ndarray, p: np.ndarray) -> bytes:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = _subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(y, p):.4f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    return _unit_square_curve(
        fig,
        ax,
        "ROC curve",
        "false positive rate (male called female)",
        "true positive rate (female recall)",
        legend="lower right",
    )


def pr_png(y: np.ndarray, p: np.ndarray) -> bytes:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = _subplots(figsize=(4.2, 4))
    ax.plot(rec, prec, lw=2, label=f"AP {average_precision_score(y, p):.4f}")
    ax.axhline(np.mean(y), ls="--", c="grey", lw=1, label="base rate")
    return _unit_square_curve(
        fig,
        ax,
        "Precision-recall curve",
        "recall (female)",
        "precision (female)",
        legend="lower left",
    )


def reliability_png(y: np.ndarray, p: np.ndarray, bins: int = 15) -> bytes:
    """Observed female rate against mean predicted P(female) per bin, with the bin counts."""
    from facegender.metrics import calibration_bins, expected_calibration_error

    b = calibration_bins(y, p, bins)
    centres = (b["edges"][:-1] + b["edges"][1:]) / 2
    width = 1 / bins
    fig, (ax, hx) = _subplots(
        2, 1, figsize=(4.2, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    m = b["count"] > 0
    ax.bar(centres[m], b["rate"][m], width=width * 0.9, color="#4c72b0", label="observed")
    ax.plot(b["mean_p"][m], b["rate"][m], "o", c="black", ms=3, label="bin mean P")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    ece = expected_calibration_error(y, p, bins)
    ax.set(ylabel="observed female rate", title=f"Reliability ({bins} bins, ECE {ece:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hx.bar(centres, b["count"], width=width * 0.9, color="grey")
    hx.set(xlabel="predicted P(female)", ylabel="images")
    hx.set_yscale("log" if b["count"].max() > 50 * max(1, b["count"][m].min()) else "linear")
    return to_png(fig)


def group_png(table: dict[str, dict], title: str) -> bytes:
    """Horizontal accuracy bars per group with the Wilson 95 % interval and n."""
    keys = list(table)
    acc = np.array([table[k]["accuracy"] for k in keys])
    lo = np.array([table[k]["accuracy_ci95"][0] for k in keys])
    hi = np.array([table[k]["accuracy_ci95"][1] for k in keys])
    fig, ax = _subplots(figsize=(6.5, 0.9 + 0.38 * len(keys)))
    yy = np.arange(len(keys))
    ax.barh(
        yy,
        acc,
        color="#4c72b0",
        xerr=np.clip([acc - lo, hi - acc], 0, None),
        capsize=3,
        ecolor="black",
    )
    for i, k in enumerate(keys):
        ax.text(1.01, i, f"{acc[i]:.3f}  n={table[k]['n']}", va="center", fontsize=8)
    ax.set(yticks=yy, yticklabels=keys, xlim=(max(0.0, lo.min() - 0.05), 1.0), title=title)
    ax.set_xlabel("accuracy (bars: 95 % Wilson interval)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def _thumb(path: str, size: int) -> np.ndarray:
    from facegender.preprocess import ImageDecodeError, open_image

    try:
        img = open_image(path)
    except (ImageDecodeError, OSError):
        return np.full((size, size, 3), 200, np.uint8)
    img.thumbnail((size, size))
    return np.asarray(img)


def prediction_grid_png(
    predictions: Sequence[dict], title: str, cols: int = 5, thumb: int = 112
) -> bytes:
    """Thumbnails titled with prediction, its probability and truth; green right, red wrong."""
    rows = max(1, -(-len(predictions) // cols))
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.8, rows * 2.05 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, d in zip(axes.flat, predictions, strict=False):
        pf = d["female_probability"]
        pred = int(pf >= 0.5)
        ok = pred == d["label"]
        ax.imshow(_thumb(d["path"], thumb))
        conf = pf if pred else 1 - pf
        ax.set_title(
            f"{LABELS[pred]} {conf:.2f}\ntruth: {LABELS[d['label']]}",
            fontsize=8,
            color=GOOD if ok else BAD,
        )
        for side in ax.spines.values():
            side.set(visible=True, color=GOOD if ok else BAD, linewidth=3)
        ax.set(xticks=[], yticks=[])
        ax.axis("on")
    fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig, dpi=85)


def risk_coverage_png(rc: dict, group: str | None = "age", title: str | None = None) -> bytes:
    """Accuracy on the answered faces against the share answered, one point per
    ``--min-confidence`` threshold (:mod:`facegender.abstain`): overall and per ``group``."""
    fig, ax = _subplots(figsize=(6.2, 4.2))
    curves = [("overall", rc["overall"], 2.4)]
    curves += [(k, v, 1.2) for k, v in rc.get("groups", {}).get(group or "", {}).items()]
    for name, c, lw in curves:
        pts = [(cv, a) for cv, a in zip(c["coverage"], c["accuracy"], strict=True) if a is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, lw=lw, label=f"{name} (n={c['n']})")
    ax.set(
        xlabel="share of faces answered (coverage)",
        ylabel="accuracy on answered faces",
        xlim=(0, 1.01),
        title=title or "Risk-coverage: raising --min-confidence from 0.5 to 0.99",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return to_png(fig)


def heatmap_grid_png(tiles: Sequence[tuple[np.ndarray, str]], title: str, cols: int = 4) -> bytes:
    """Crops with their saliency painted on (:func:`facegender.explain.crop_overlay`), titled."""
    rows = max(1, -(-len(tiles) // cols))
    fig, axes = _subplots(rows, cols, figsize=(cols * 2.0, rows * 2.2 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, caption) in zip(axes.flat, tiles, strict=False):
        ax.imshow(img, interpolation="bilinear")
        ax.set_title(caption, fontsize=8, color=BAD)
    fig.suptitle(title)
    fig.tight_layout()
    return to_png(fig, dpi=85)
