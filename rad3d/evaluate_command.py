"""``rad3d evaluate``: the metric engine on prediction files from anywhere.

    rad3d evaluate --predictions radfm_predictions.jsonl [more files] --protocol spatial --lowercase \\
        --out radfm_eval.json
    rad3d evaluate --predictions data/tables/predictions/prior|4.parquet --protocol 3drad --out prior.json

``spatial`` is CT-SpatialVQA's protocol (keys ``count, bleu, rouge1_f, rouge2_f, rougeL_f, meteor,
sbert_cosine`` per file, laid out like its ``reference_metrics.json``); ``3drad`` is 3D-RAD's, per
task and subtask with the macro average per task. Files are JSONL, CSV or Parquet with a
``prediction`` and an answer column (``answer``/``Answer``); for 3drad also ``Task``, ``Subtask``,
``QuestionType`` and ``AnswerChoice`` where known (without them every row is one open "all" group).

Every input is checked before anything is computed; a bad one stops the command with exit code 2 and
one line on stderr naming the file and the line (or byte offset): a missing prediction, answer or
question column, an empty or header-only file, bytes that are not UTF-8, an empty answer, a task
that is not 1-6, ``--out`` naming an input or a folder. Results are keyed by each path as given.
Where 3D-RAD's script has a quirk (empty open predictions skipped, ``"<letter>."`` anywhere counted
correct) its figure is reproduced and the strict one (``*_strict``) printed and written beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rad3d_pipeline.common.cpus import usable_cpus

METRIC_CHOICES = ("bleu", "rouge", "meteor", "bertscore", "sbert")
DEFAULT_METRICS = {"spatial": "bleu,rouge,meteor,sbert", "3drad": "bleu,rouge,meteor,bertscore"}
# 3drad table columns -> JSON names (the companion benchmark's where they exist) and the --metrics choice they need.
_3DRAD_KEYS = {
    "bleu": ("bleu", "bleu"),
    "rouge1": ("rouge1_f", "rouge"),
    "meteor": ("meteor", "meteor"),
    "bertscore_f1": ("bertscore_f1", "bertscore"),
    "exact_match": ("exact_match", None),
    "accuracy": ("accuracy", None),
    "accuracy_strict": ("accuracy_strict", None),
    "bleu_strict": ("bleu_strict", "bleu"),
    "rouge1_strict": ("rouge1_f_strict", "rouge"),
    "meteor_strict": ("meteor_strict", "meteor"),
    "bertscore_f1_strict": ("bertscore_f1_strict", "bertscore"),
    "parsed_accuracy": ("parsed_accuracy", None),
    "jury_accuracy": ("jury_accuracy", None),
    "alignscore": ("alignscore", None),
}


class InputError(Exception):
    """A user's input that stops ``rad3d evaluate`` before anything is computed: one line, exit code 2."""


def _metrics(value: str | None, protocol: str) -> list[str]:
    names = [m.strip() for m in (value or DEFAULT_METRICS[protocol]).split(",") if m.strip()]
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown:
        raise InputError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRIC_CHOICES)}")
    return names


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN (metric not applicable) -> null, numpy scalars -> Python numbers."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out


def _jury(names: str | None, cache_dir: Path) -> Any:
    if not names:
        return None
    from rad3d_pipeline.evaluation.jury import OFFLINE_JUDGE, Jury
    from rad3d_pipeline.llm.cache import ResponseCache
    from rad3d_pipeline.llm.client import EndpointConfig, LlmClient

    clients: dict[str, Any] = {}
    cache: ResponseCache | None = None
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name == OFFLINE_JUDGE:
            clients[name] = None
        else:
            cache = cache or ResponseCache(cache_dir / "cache.sqlite")
            config = EndpointConfig(
                model=name,
                base_url=os.environ.get("OPENAI_BASE_URL") or None,
                api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                max_tokens=16,
            )
            clients[name] = LlmClient(config, cache)
    return Jury(clients)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_paths(predictions: list[str], out_arg: str) -> list[Path]:
    """The prediction files (each as given) and ``--out``, checked before anything is read."""
    paths = [Path(p) for p in predictions]
    missing = [p for p in predictions if not Path(p).is_file()]
    if missing:
        raise InputError(f"predictions file(s) not found: {', '.join(missing)}")
    for i, path in enumerate(paths):
        twice = next((p for p in paths[:i] if _same_file(p, path)), None)
        if twice is not None:
            raise InputError(f"{path}: given twice (also as {twice}); give each predictions file once")
    out = Path(out_arg)
    if out.is_dir():
        raise InputError(f"--out {out} is an existing folder; give the path of the JSON report to write")
    inputs = [p for p in paths if _same_file(p, out)]
    if inputs:
        raise InputError(f"--out {out} is the predictions file {inputs[0]}; writing the report would overwrite it")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot write under {parent}")
    return paths


def _figure(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


HEADLINES = ("accuracy", "parsed_accuracy", "bleu", "rouge1_f", "meteor", "bertscore_f1", "exact_match")


def _figures(values: dict[str, Any]) -> list[str]:
    parts = []
    for name in HEADLINES:
        if values.get(name) is None:
            continue
        strict = values.get(f"{name}_strict")
        beside = f" (strict {_figure(strict)})" if strict is not None else ""
        parts.append(f"{name} {_figure(values[name])}{beside}")
    return parts


def task_lines(result: dict[str, Any]) -> list[str]:
    """Per task (macro over its subtasks) and per subtask: count, skipped empties, each headline figure with
    its strict figure beside it."""
    lines = []
    for label, entry in result["tasks"].items():
        scored = sum(s["scored"] for s in entry["subtasks"].values())
        parts = [f"n={entry['count']}"]
        if entry["question_type"] == "Open" and scored < entry["count"]:
            parts.append(f"{entry['count'] - scored} empty predictions skipped by the protocol")
        lines.append(f"  task {label} ({entry['question_type']}): " + ", ".join(parts + _figures(entry["macro"])))
        for name, values in entry["subtasks"].items():
            lines.append(f"    {name}: " + ", ".join([f"n={values['count']}", *_figures(values)]))
    return lines


def evaluate_3drad(
    frame: Any, args: argparse.Namespace, metrics: list[str], bertscore: Any, jury: Any
) -> dict[str, Any]:
    """The 3D-RAD protocol's report of one checked predictions frame (see metrics.load_predictions)."""
    from rad3d_pipeline.evaluation.metrics import PROTOCOL_VERSIONS, EngineOptions, evaluate_predictions, task_summary

    if args.lowercase:
        frame["prediction"] = frame["prediction"].str.lower()
        frame["Answer"] = frame["Answer"].str.lower()
    options = EngineOptions(bertscore=bertscore, workers=args.workers, jury=jury, jury_label=jury.label if jury else "")
    table = evaluate_predictions(frame, options)
    summary = task_summary(table)
    keep = {col: name for col, (name, needs) in _3DRAD_KEYS.items() if needs is None or needs in metrics}
    if jury is None:
        keep.pop("jury_accuracy", None)
    keep.pop("alignscore", None)
    result: dict[str, Any] = {
        "count": len(frame),
        "protocol_version": PROTOCOL_VERSIONS["3drad"],
        "bertscore_model": str(table["bertscore_model"].iloc[0]) if len(table) and "bertscore" in metrics else None,
        "jury": options.jury_label or None,
        "tasks": {},
    }
    # A task is one entry; a file whose rows carry no task (task 0) but mix open and closed questions
    # gets one entry per question type ("0-open", "0-close"), never one overwriting the other.
    mixed = table.groupby("Task")["QuestionType"].nunique()
    for (task, qtype), rows in table.groupby(["Task", "QuestionType"], sort=True):
        macro = summary[(summary["Task"] == task) & (summary["QuestionType"] == qtype)].iloc[0]
        label = f"{task}-{str(qtype).lower()}" if mixed[task] > 1 else str(task)
        entry: dict[str, Any] = {
            "question_type": str(macro["QuestionType"]),
            "count": int(rows["n"].sum()),
            "macro": _clean({name: macro[col] for col, name in keep.items() if col in macro}),
            "subtasks": {},
        }
        for _, row in rows.iterrows():
            values = {"count": int(row["n"]), "scored": int(row["n_scored"])}
            values.update({name: row[col] for col, name in keep.items()})
            entry["subtasks"][str(row["subtask_name"])] = _clean(values)
        result["tasks"][label] = entry
    return result


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        return _evaluate(args)
    except InputError as exc:
        print(f"rad3d evaluate: {exc}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from rad3d_pipeline.evaluation.prediction_files import PredictionFileError, load_spatial_pairs, spatial_metrics_of
    from rad3d_pipeline.evaluation.protocol_versions import PROTOCOL_VERSIONS

    metrics = _metrics(args.metrics, args.protocol)
    paths = check_paths(list(args.predictions), args.out)
    # Every file read and checked before anything is computed: a bad last file costs no scoring time.
    # The spatial path stays free of pandas (a quick call); the 3D-RAD protocol works on frames.
    loaded: list[Any] = []
    for path in paths:
        try:
            if args.protocol == "spatial":
                loaded.append(load_spatial_pairs(path))
            else:
                from rad3d_pipeline.evaluation.metrics import load_predictions

                loaded.append(load_predictions(path, args.protocol).rows)
        except (PredictionFileError, FileNotFoundError) as exc:
            raise InputError(str(exc)) from None
    bertscore: Any = False
    jury: Any = None
    if args.protocol == "3drad":
        from rad3d_pipeline.evaluation.text_metrics import BertScoreF1

        try:
            if "bertscore" in metrics:
                from resources import environment  # the settings table: RAD3D_BERTSCORE_MODEL when no flag

                model = args.bertscore_model or environment.read(environment.BERTSCORE_MODEL)
                bertscore = BertScoreF1(model_path=model)
            else:
                bertscore = False
        except FileNotFoundError as exc:
            raise InputError(f"--bertscore-model: {exc}") from None
        jury = _jury(args.jury, Path(args.cache_dir))
    report: dict[str, Any] = {
        "protocol": args.protocol,
        "protocol_version": PROTOCOL_VERSIONS[args.protocol],
        "lowercase": bool(args.lowercase),
        "metrics": metrics,
        "results": {},
    }
    embedder = None
    if args.protocol == "spatial" and "sbert" in metrics:
        from rad3d_pipeline.evaluation.text_metrics import SentenceEmbedder

        embedder = SentenceEmbedder()
    for given, rows in zip(args.predictions, loaded, strict=True):
        if args.protocol == "spatial":
            predictions, answers = rows
            values = spatial_metrics_of(
                predictions,
                answers,
                lowercase=args.lowercase,
                metrics=metrics,
                workers=args.workers,
                embedder=embedder,
            )
            print(f"{given}: " + ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        else:
            values = evaluate_3drad(rows, args, metrics, bertscore, jury)
            print(f"{given}: {values['count']} rows")
            print("\n".join(task_lines(values)))
        report["results"][given] = values
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    print(f"Wrote {out}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate", help="text metrics and accuracies of prediction files (3D-RAD or CT-SpatialVQA protocol)"
    )
    parser.add_argument("--predictions", nargs="+", required=True, help="JSONL, CSV or Parquet prediction file(s)")
    parser.add_argument("--protocol", required=True, choices=["3drad", "spatial"])
    parser.add_argument("--lowercase", action="store_true", help="lowercase predictions and answers first")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated subset of bleu,rouge,meteor,bertscore,sbert "
        f"(default spatial: {DEFAULT_METRICS['spatial']}; 3drad: {DEFAULT_METRICS['3drad']})",
    )
    parser.add_argument("--out", required=True, help="where to write the JSON report")
    parser.add_argument(
        "--workers",
        type=int,
        default=usable_cpus(),
        help="processes for ROUGE/METEOR/BLEU, values unchanged (default: the usable CPUs, here %(default)s)",
    )
    parser.add_argument(
        "--bertscore-model",
        default=None,
        help="local roberta-large folder (default RAD3D_BERTSCORE_MODEL, else MiniLM)",
    )
    parser.add_argument(
        "--jury",
        default=None,
        help="3drad: LLM-jury judges, comma-separated model names on OPENAI_BASE_URL, or offline-rules",
    )
    parser.add_argument("--cache-dir", default=".rad3d_eval_cache", help="LLM-jury response cache folder")
    parser.set_defaults(func=cmd_evaluate)
    return parser
