"""Turn an :func:`facegender.evaluate.evaluate` result into ``report.html`` and ``report.md``.

``report.html`` is self-contained (figures are base64 data URIs, no external CSS/JS), so it can be
mailed or attached to a CI run; ``report.md`` references the same figures as PNG files beside it.
Intervals: Wilson score for the proportions (accuracy, precision, recall, specificity), percentile
bootstrap over images for F1, ROC-AUC, log loss and ECE.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegender import plots
from facegender.labels import LABELS
from facegender.metrics import bootstrap_interval, expected_calibration_error, wilson_interval

GROUP_TITLES = {
    "age": "Accuracy by age band",
    "race": "Accuracy by race",
    "race_gender": "Accuracy by race x gender",
    "source": "Accuracy by source",
}
# Section ids, in order; tests and readers can rely on these anchors.
SECTIONS = (
    "summary",
    "metrics",
    "classification",
    "confusion",
    "curves",
    "calibration",
    "groups",
    "samples",
    "mistakes",
    "abstain",
    "training",
    "skipped",
)


@dataclass
class Section:
    id: str
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs (plain text)
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    pred = p >= 0.5
    tp = np.sum(pred & (y == 1))
    den = pred.sum() + (y == 1).sum()
    return float(2 * tp / den) if den else 0.0


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def headline(y: np.ndarray, p: np.ndarray, n_boot: int = 1000) -> list[dict]:
    """Rows of (metric, value, 95 % interval, method); positive class is female."""
    pred = (p >= 0.5).astype(int)
    tp, fp = int(np.sum((pred == 1) & (y == 1))), int(np.sum((pred == 1) & (y == 0)))
    tn, fn = int(np.sum((pred == 0) & (y == 0))), int(np.sum((pred == 0) & (y == 1)))

    def prop(name, k, n):
        return {
            "metric": name,
            "value": k / n if n else float("nan"),
            "ci95": list(wilson_interval(k, n)),
            "method": f"Wilson ({k}/{n})",
        }

    def boot(name, fn):
        value = fn(y, p)
        return {
            "metric": name,
            "value": float("nan") if value is None else value,
            "ci95": list(bootstrap_interval(fn, y, p, n_boot=n_boot)),
            "method": f"bootstrap ({n_boot} resamples)",
        }

    return [
        prop("accuracy", tp + tn, len(y)),
        prop("precision (female)", tp, tp + fp),
        prop("recall (female)", tp, tp + fn),
        prop("specificity (male recall)", tn, tn + fp),
        boot("F1 (female)", _f1),
        boot("ROC-AUC", _auc),
        boot("log loss", _log_loss),
        boot("ECE (15 bins)", expected_calibration_error),
    ]


def classification_rows(y: np.ndarray, p: np.ndarray) -> list[list[str]]:
    """scikit-learn's classification report at P(female) >= 0.5: per class, then the averages."""
    from sklearn.metrics import classification_report

    rep = classification_report(
        y,
        (p >= 0.5).astype(int),
        labels=[0, 1],
        target_names=list(LABELS),
        output_dict=True,
        zero_division=0,
    )
    rows = []
    for name in (*LABELS, "macro avg", "weighted avg"):
        r = rep[name]
        rows.append(
            [
                name,
                *(f"{r[k]:.4f}" for k in ("precision", "recall", "f1-score")),
                str(int(r["support"])),
            ]
        )
    rows.insert(2, ["accuracy", "", "", f"{rep['accuracy']:.4f}", str(len(y))])
    return rows


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _training_section(r: ReportData) -> Section:
    """The checkpoint's own training record: curves.png, history and calibration, if present."""
    model_dir, out = r.model_dir, r.out
    sec = Section("training", "Training run")
    if model_dir is None or not (model_dir / "config.json").is_file():
        sec.text.append("No checkpoint folder (with config.json) given, so no training record.")
        return sec
    config = json.loads((model_dir / "config.json").read_text())
    args = config.get("train_args", {})
    sec.text.append(f"Checkpoint: {model_dir}")
    rows = []
    for key in ("model", "image_size", "epochs", "batch_size", "lr", "ema", "seed"):
        if key in args:
            rows.append([f"train {key}", str(args[key])])
    training = config.get("training", {})
    if training:
        rows.append(["epochs run", str(training.get("epochs_run"))])
        rows.append(["training time", f"{training.get('seconds', 0) / 60:.1f} min"])
    cal = config.get("calibration", {})
    if "temperature" in cal:
        rows.append(["temperature", _num(cal["temperature"], 3)])
    if "ece_before" in cal:
        rows.append(
            ["validation ECE before -> after", f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"]
        )
    if "age_scales" in cal:  # train --age-weight: the logit scale of each age class it reads
        scales = ", ".join(f"{k} {v:.2f}" for k, v in cal["age_scales"].items())
        rows.append(["logit scale per age class", scales])
        rows.append(["age head accuracy (validation)", _num(cal.get("age_head_accuracy"))])
    val = config.get("metrics", {}).get("validation", {})
    if val:
        rows.append(["validation accuracy", _num(val.get("accuracy"))])
        rows.append(["validation ROC-AUC", _num(val.get("roc_auc"))])
    history_file = model_dir / "history.json"
    if history_file.is_file():
        history = json.loads(history_file.read_text())
        if history:
            best = min(history, key=lambda h: h["val_loss"])
            rows.append(
                [
                    "best epoch (val loss)",
                    f"{best['epoch']}: loss {best['val_loss']:.4f}, acc {best['val_acc']:.4f}",
                ]
            )
        sec.text.append(f"Per-epoch history: {model_dir / 'history.csv'}")
    sec.table = (["", "value"], rows)
    if (model_dir / "curves.png").is_file():
        shutil.copyfile(model_dir / "curves.png", out / "training_curves.png")
        sec.images.append(("training_curves.png", "Loss and accuracy per epoch (from train)."))
    else:
        sec.text.append("This checkpoint folder has no curves.png.")
    return sec


@dataclass
class ReportData:
    """What every section builder reads: the evaluation, its labels and probabilities, and the
    folder the figures go to (one object, so adding a section means adding one function)."""

    result: dict
    out: Path
    model_dir: Path | None = None
    n_boot: int = 1000
    seed: int = 0
    preds: list[dict] = field(init=False)
    y: np.ndarray = field(init=False)  # truth, 1 = female
    p: np.ndarray = field(init=False)  # P(female)

    def __post_init__(self) -> None:
        self.preds = self.result.get("predictions") or []
        if not self.preds:
            raise ValueError("the evaluation has no predictions to report on")
        self.y = np.array([d["label"] for d in self.preds], dtype=int)
        self.p = np.array([d["female_probability"] for d in self.preds], dtype=float)

    def figure(self, name: str, png: bytes) -> str:
        """Write one PNG into the report folder; returns its file name for ``Section.images``."""
        (self.out / name).write_bytes(png)
        return name


def _summary_section(r: ReportData) -> Section:
    model = r.result.get("model", {})
    counts = np.bincount(r.y, minlength=2)
    sec = Section("summary", "Summary")
    sec.text += [
        f"{len(r.y)} images ({counts[0]} male, {counts[1]} female), "
        f"{len(r.result.get('skipped', []))} skipped.",
        f"Model: {model.get('name', '?')} ({model.get('backend', '?')} backend), "
        f"temperature {_num(model.get('temperature'), 3)}. Positive class: female; "
        "a face is called female when P(female) >= 0.5.",
    ]
    return sec


def _metrics_section(r: ReportData) -> Section:
    sec = Section("metrics", "Headline metrics with 95 % intervals")
    sec.table = (
        ["metric", "value", "95 % interval", "interval method"],
        [
            [
                row["metric"],
                _num(row["value"]),
                f"{_num(row['ci95'][0])} - {_num(row['ci95'][1])}",
                row["method"],
            ]
            for row in headline(r.y, r.p, r.n_boot)
        ],
    )
    sec.text.append(
        "Wilson score intervals for proportions; percentile bootstrap over images otherwise."
    )
    return sec


def _classification_section(r: ReportData) -> Section:
    sec = Section("classification", "Classification report")
    sec.table = (
        ["class", "precision", "recall", "F1", "support"],
        classification_rows(r.y, r.p),
    )
    sec.text.append(
        "Per class at P(female) >= 0.5, as scikit-learn's classification_report; the accuracy "
        "row's F1 column holds the accuracy."
    )
    return sec


def _confusion_section(r: ReportData) -> Section:
    matrix = r.result.get("confusion", {}).get("matrix") or np.zeros((2, 2), int).tolist()
    sec = Section("confusion", "Confusion matrix")
    sec.table = (
        ["truth \\ predicted", *LABELS],
        [[LABELS[i], *(str(v) for v in row)] for i, row in enumerate(matrix)],
    )
    sec.images.append((r.figure("confusion.png", plots.confusion_png(matrix)), "Rows: truth."))
    return sec


def _curves_section(r: ReportData) -> Section:
    sec = Section("curves", "ROC and precision-recall curves")
    if len(np.unique(r.y)) == 2:
        sec.images += [
            (r.figure("roc.png", plots.roc_png(r.y, r.p)), "ROC curve (positive: female)."),
            (
                r.figure("pr.png", plots.pr_png(r.y, r.p)),
                "Precision-recall curve (positive: female).",
            ),
        ]
    else:
        sec.text.append("Only one class present: ROC and PR curves are undefined.")
    return sec


def _calibration_section(r: ReportData) -> Section:
    sec = Section("calibration", "Calibration (reliability diagram)")
    sec.text.append(
        "Bars: observed share of women among images whose P(female) falls in each bin; a "
        "calibrated model sits on the diagonal. Below: images per bin."
    )
    png = plots.reliability_png(r.y, r.p)
    sec.images.append((r.figure("reliability.png", png), "Reliability diagram."))
    return sec


def _groups_section(r: ReportData) -> Section:
    sec = Section("groups", "Accuracy by group")
    all_groups = r.result.get("groups", {})
    per_source = all_groups.get("by_source", {})
    for name, title in GROUP_TITLES.items():
        # Several sources: each source's own groups (FairFace's 7 races beside UTKFace's 5).
        tables = (
            [(f"_{src}", f"{title}: {src}", t.get(name)) for src, t in per_source.items()]
            if per_source and name != "source"
            else [("", title, all_groups.get(name))]
        )
        for suffix, label, table in tables:
            if table and name != "age":  # age groups come in age order; the rest alphabetical
                table = dict(sorted(table.items()))
            if table:
                png = r.figure(f"groups_{name}{suffix}.png", plots.group_png(table, label))
                sec.images.append((png, label))
            else:
                sec.text.append(f"{label}: no {name} labels in this data.")
    return sec


def _samples_section(r: ReportData) -> Section:
    rng = np.random.default_rng(r.seed)
    pick = rng.choice(len(r.preds), size=min(25, len(r.preds)), replace=False)
    sec = Section("samples", "Sample predictions")
    sec.text.append(
        f"{len(pick)} images drawn at random (seed {r.seed}); title: predicted label and its "
        "probability, then the truth. Green: right, red: wrong."
    )
    grid = plots.prediction_grid_png([r.preds[i] for i in sorted(pick)], "Sample predictions")
    sec.images.append((r.figure("samples.png", grid), "Random sample."))
    return sec


def _mistakes_section(r: ReportData) -> Section:
    wrong = np.flatnonzero((r.p >= 0.5).astype(int) != r.y)
    conf = np.maximum(r.p, 1 - r.p)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:25]
    sec = Section("mistakes", "Most confident mistakes")
    if not len(worst):
        sec.text.append("No mistakes.")
        return sec
    sec.text.append(
        f"{len(wrong)} mistakes in all; the {len(worst)} made with the highest confidence."
    )
    grid = plots.prediction_grid_png([r.preds[i] for i in worst], "Most confident mistakes")
    sec.images.append((r.figure("mistakes.png", grid), "Most confident mistakes."))
    sec.table = (
        ["file", "truth", "P(female)"],
        [[r.preds[i]["path"], LABELS[r.y[i]], f"{r.p[i]:.4f}"] for i in worst],
    )
    _mistake_heatmaps(sec, [r.preds[i] for i in worst[:MISTAKE_HEATMAPS]], r)
    return sec


# How many of the most confident mistakes get a saliency heat map in the report.
MISTAKE_HEATMAPS = 8


def _mistake_heatmaps(sec: Section, preds: list[dict], r: ReportData) -> None:
    """Add the occlusion heat maps (:mod:`facegender.explain`) of these mistakes to ``sec``:
    what the model looked at when it was most sure and wrong. Needs the checkpoint folder."""
    from facegender.classifier import load_classifier
    from facegender.explain import crop_overlay, saliency
    from facegender.preprocess import ImageDecodeError, load_face

    if r.model_dir is None or not preds:
        return
    try:
        clf = load_classifier(r.model_dir)
    except (FileNotFoundError, ValueError) as e:
        sec.text.append(f"No heat maps: cannot load the model ({e}).")
        return
    tiles = []
    for d in preds:
        try:
            a = load_face(d["path"], clf.preprocess)
        except (ImageDecodeError, OSError):
            continue
        pf = d["female_probability"]
        caption = f"{LABELS[int(pf >= 0.5)]} {max(pf, 1 - pf):.2f}\ntruth: {LABELS[d['label']]}"
        tiles.append((crop_overlay(a, saliency(clf, a).heat), caption))
    if tiles:
        png = plots.heatmap_grid_png(tiles, "What the model looked at in its surest mistakes")
        sec.images.append(
            (
                r.figure("mistakes_heatmaps.png", png),
                "Occlusion heat maps of the most confident mistakes on each face crop: red "
                "regions pushed towards the (wrong) answer, blue ones against it.",
            )
        )


def _abstain_section(r: ReportData) -> Section:
    """Risk-coverage (``--min-confidence``): accuracy on the answered faces vs share answered."""
    sec = Section("abstain", "Abstaining: accuracy vs share of faces answered")
    rc = r.result.get("risk_coverage")
    if not rc:
        sec.text.append("No risk-coverage data in this evaluation.")
        return sec
    sec.text.append(
        "With --min-confidence P a face whose max(P(female), P(male)) is below P is answered "
        "'uncertain'. Each point is one threshold; the table gives the largest share of faces "
        "that can be answered at each accuracy."
    )
    entries = [("overall", rc["overall"])] + [
        (f"{g} {k}", v) for g, table in rc.get("groups", {}).items() for k, v in table.items()
    ]
    targets = list(rc["overall"]["coverage_at_accuracy"])
    sec.table = (
        ["faces", "n", *(f"answered at {100 * float(t):.0f} % accuracy" for t in targets)],
        [
            [name, str(e["n"]), *(f"{100 * e['coverage_at_accuracy'][t]:.1f} %" for t in targets)]
            for name, e in entries
        ],
    )
    for group in ("age", "source"):
        if group in rc.get("groups", {}) or group == "age":
            png = plots.risk_coverage_png(rc, group)
            sec.images.append(
                (r.figure(f"risk_coverage_{group}.png", png), f"Risk-coverage by {group}.")
            )
    return sec


def _skipped_section(r: ReportData) -> Section:
    sec = Section("skipped", "Skipped files")
    skip = r.result.get("skipped", [])
    if skip:
        sec.table = (["file", "reason"], [[s["path"], s["reason"]] for s in skip])
    else:
        sec.text.append("None: every file was read.")
    return sec


# One builder per entry of SECTIONS, in the same order.
SECTION_BUILDERS = (
    _summary_section,
    _metrics_section,
    _classification_section,
    _confusion_section,
    _curves_section,
    _calibration_section,
    _groups_section,
    _samples_section,
    _mistakes_section,
    _abstain_section,
    _training_section,
    _skipped_section,
)


def build_sections(
    result: dict, out: Path, model_dir: Path | None = None, n_boot: int = 1000, seed: int = 0
) -> list[Section]:
    """Compute every section and write its figures into ``out``."""
    data = ReportData(result, Path(out), model_dir, n_boot, seed)
    return [build(data) for build in SECTION_BUILDERS]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{margin-top:1.8em;color:#0b3d91}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left}th{background:#f6f8fa}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}
figcaption{font-size:.85em;color:#57606a}img{max-width:100%}
nav a{margin-right:.8em}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(sections: list[Section], out: Path, title: str) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>"
    ]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(t)}</p>" for t in s.text]
        if s.table:
            parts.append(_html_table(*s.table))
        for name, caption in s.images:
            data = base64.b64encode((out / name).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: list[Section], title: str) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        for t in s.text:
            lines += [t, ""]
        if s.table:
            header, rows = s.table
            lines.append("| " + " | ".join(_md_cell(h) or " " for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        for name, caption in s.images:
            lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def write_report(
    result: dict,
    out: str | Path,
    model_dir: str | Path | None = None,
    title: str = "facegender evaluation report",
    n_boot: int = 1000,
) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and their PNG figures into ``out``; returns paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(result, out, Path(model_dir) if model_dir else None, n_boot)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(sections, out, title), encoding="utf-8")
    md_path.write_text(render_markdown(sections, title), encoding="utf-8")
    return {"html": html_path, "markdown": md_path}
