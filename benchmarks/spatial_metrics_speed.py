"""Speed of the CT-SpatialVQA text metrics: the benchmark's own procedure vs rad3d_pipeline.evaluation.text_metrics.

Builds one 9,077-row predictions JSONL file per fixture file in fixtures/spatialvqa_mini/
(the 600 rows repeated; from the second repetition on, about half of the rows get a
deterministic edit of the prediction: a dropped word, two swapped words, an appended word or
changed capitalisation), so the data keep the answers shared between models and a realistic
share of repeated model outputs. Then, in one process, with WordNet and the SBERT model
already loaded for both:

- ``reference``: the procedure of the benchmark's ``evaluate_text_metrics.py`` (``--lower
  --no-bertscore``): sacreBLEU ``corpus_bleu``; a rouge-score ``RougeScorer`` per item; NLTK
  ``meteor_score`` per item on whitespace tokens; SBERT ``encode`` of predictions and answers in
  chunks of 64 rows (normalised embeddings, row-wise dot product, mean);
- ``ours``: what ``rad3d evaluate --protocol spatial --lowercase`` runs:
  :func:`rad3d_pipeline.evaluation.metrics.spatial_file_metrics` (BLEU, ROUGE, METEOR; ``--workers``
  processes, default the usable CPUs, as the command's) and one shared
  :class:`~rad3d_pipeline.evaluation.embeddings.SentenceEmbedder` (SBERT cosine).

The library modules both call are imported before timing. Prints seconds per file and part,
the ratios (reference / ours) for the published text metrics (BLEU, ROUGE-1/2/L, METEOR; best
of ``--repeat`` cold repetitions each, and each repetition's own ratio), for the SBERT cosine (one
run) and for both, and the largest difference of every value.

Then the per-call case, as a user calls it: one ``rad3d evaluate --protocol spatial --lowercase
--metrics bleu,rouge,meteor`` process per file, the whole process timed (interpreter start,
imports, WordNet synonyms, reading, scoring, writing the JSON; best of ``--repeat``), its values
compared with the reference's, and its ratio against the reference procedure of the same run
(in-process, WordNet already loaded: the reference's most favourable figure) and against the
reference procedure run the same way, one process per file as a user runs the benchmark's script
(``--reference-process FILE``: its imports and NLTK's WordNet load counted). And the fixed cost: the
same command on a 10-row file against ``python -c pass`` (best of ``--repeat`` each).

    .venv/bin/python benchmarks/spatial_metrics_speed.py [--rows 9077] [--workers 1] [--no-sbert] [--no-per-call]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rad3d_pipeline.common.cpus import usable_cpus
from rad3d_pipeline.evaluation import text_metrics
from rad3d_pipeline.evaluation.embeddings import load_model
from rad3d_pipeline.evaluation.metrics import spatial_file_metrics
from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import ensure_wordnet

REPO = Path(__file__).resolve().parents[1]
FIXTURE_FILES = ("merlin_predictions_600.jsonl", "radfm_predictions_600.jsonl")
TEXT_METRICS = ("bleu", "rouge", "meteor")
T = TypeVar("T")


def fixtures_dir() -> Path:
    root = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
    return root / "spatialvqa_mini"


def distinct_share(texts: list[str]) -> float:
    return len(set(texts)) / max(len(texts), 1)


def variant(text: str, key: str, vocabulary: list[str]) -> str:
    """``text`` with one word (chosen by ``key``) replaced by a word of ``vocabulary`` (chosen by ``key``)."""
    h = zlib.crc32(key.encode())
    words = text.split() or [""]
    words[h % len(words)] = vocabulary[(h >> 8) % len(vocabulary)]
    return " ".join(words)


def build_files(out_dir: Path, rows: int) -> list[Path]:
    """One ``rows``-row file per fixture file, with the fixture's share of repeated texts.

    Rows past the 600 real ones repeat a real row; its answer (the same in every file, as both
    models answer the same questions) and its prediction are each replaced by a one-word variant
    with the probability that a text of the real 600 rows is distinct, so the built files repeat
    answers, predictions and pairs about as often as the real rows do. Replacement words come
    from the fixture's own vocabulary.
    """
    bases = {
        name: [json.loads(line) for line in (fixtures_dir() / name).read_text(encoding="utf-8").splitlines() if line]
        for name in FIXTURE_FILES
    }
    vocabulary = sorted(
        {w for base in bases.values() for row in base for k in ("answer", "prediction") for w in str(row[k]).split()}
    )
    paths = []
    for name, base in bases.items():
        answer_share = distinct_share([str(r["answer"]).strip().lower() for r in base])
        prediction_share = distinct_share([str(r["prediction"]).strip().lower() for r in base])
        path = out_dir / name.replace("_600", f"_{rows}")
        with path.open("w", encoding="utf-8") as handle:
            for i in range(rows):
                row = dict(base[i % len(base)])
                if i >= len(base):
                    for field, share, key in (
                        ("answer", answer_share, f"answer:{i}"),
                        ("prediction", prediction_share, f"{name}:{i}"),
                    ):
                        if zlib.crc32(f"new {key}".encode()) % 10_000 < share * 10_000:
                            row[field] = variant(str(row[field] or ""), key, vocabulary)
                handle.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths


def read_normalized(path: Path) -> tuple[list[str], list[str]]:
    """The script's loading: strip and lowercase both fields; rows with an empty answer dropped."""
    preds, refs = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        answer = str(row.get("answer") or "").strip().lower()
        if not answer:
            continue
        refs.append(answer)
        preds.append(str(row.get("prediction") or "").strip().lower())
    return preds, refs


def reference_text_metrics(path: Path) -> dict[str, float]:
    """The script's BLEU, ROUGE and METEOR: plain per-row loops, nothing memoised."""
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score  # type: ignore[import-untyped]
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    preds, refs = read_normalized(path)
    out: dict[str, float] = {"count": len(preds), "bleu": sacrebleu.corpus_bleu(preds, [refs]).score}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    r1, r2, rl, met = [], [], [], []
    for p, r in zip(preds, refs, strict=True):
        s = scorer.score(r, p)
        r1.append(s["rouge1"].fmeasure)
        r2.append(s["rouge2"].fmeasure)
        rl.append(s["rougeL"].fmeasure)
        met.append(meteor_score([r.split()], p.split()))
    out.update(
        rouge1_f=float(np.mean(r1)),
        rouge2_f=float(np.mean(r2)),
        rougeL_f=float(np.mean(rl)),
        meteor=float(np.mean(met)),
    )
    return out


def reference_sbert(path: Path, model: Any) -> dict[str, float]:
    """The script's ``compute_sbert``: predictions and answers encoded in chunks of 64 rows."""
    preds, refs = read_normalized(path)
    chunk = 64
    pred_embs, ref_embs = [], []
    for start in range(0, len(preds), chunk):
        for texts, out in ((preds, pred_embs), (refs, ref_embs)):
            out.append(
                model.encode(
                    texts[start : start + chunk],
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                )
            )
    sims = (np.concatenate(pred_embs) * np.concatenate(ref_embs)).sum(axis=1)
    return {"sbert_cosine": float(np.mean(sims))}


def clear_nltk_synset_cache() -> None:
    """Empty NLTK WordNet's synset cache, as in a fresh process (the index stays loaded)."""
    from nltk.corpus import wordnet

    for cache in wordnet._synset_offset_cache.values():
        cache.clear()


def ours_sbert(path: Path, embedder: text_metrics.SentenceEmbedder) -> dict[str, float]:
    preds, refs = text_metrics.normalize_pairs(*text_metrics.read_predictions_jsonl(path))
    return {"sbert_cosine": float(np.mean(embedder.cosine(preds, refs)))}


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


Values = dict[str, float]


def run_part(label: str, paths: list[Path], fn: Callable[[Path], Values]) -> tuple[list[Values], float]:
    values, total = [], 0.0
    for path in paths:
        value, seconds = timed(lambda p=path: fn(p))
        values.append(value)
        total += seconds
        print(f"  {label:<22} {path.name}: {seconds:7.2f}s")
    return values, total


def rad3d_command() -> list[str]:
    """The ``rad3d`` console script of this interpreter's environment (as a user runs it)."""
    script = Path(sys.executable).with_name("rad3d")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rad3d.cli"]


def evaluate_call(path: Path, out: Path, workers: int) -> tuple[Values, float]:
    """One ``rad3d evaluate`` process on ``path``: its values and its wall time (process start counted)."""
    command = [
        *rad3d_command(),
        "evaluate",
        "--predictions",
        str(path),
        "--protocol",
        "spatial",
        "--lowercase",
        "--metrics",
        ",".join(TEXT_METRICS),
        "--workers",
        str(workers),
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"rad3d evaluate failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    results: dict[str, Values] = json.loads(out.read_text(encoding="utf-8"))["results"]
    return next(iter(results.values())), seconds


def best_process_seconds(command: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def reference_process(path: Path) -> int:
    """``--reference-process``: the reference procedure as its own process (what a user's run of the script costs)."""
    ensure_wordnet()
    print(json.dumps(reference_text_metrics(path)))
    return 0


def reference_calls(paths: list[Path], repeat: int) -> tuple[list[Values], float]:
    """The reference procedure, one process per file: values and the best total wall time."""
    best, values = float("inf"), list[Values]()
    for repetition in range(1, repeat + 1):
        total, values = 0.0, list[Values]()
        for path in paths:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--reference-process", str(path)], capture_output=True, text=True, check=True
            )
            seconds = time.perf_counter() - start
            values.append(json.loads(done.stdout.splitlines()[-1]))
            total += seconds
            print(f"  reference process (rep {repetition}) {path.name}: {seconds:7.2f}s")
        best = min(best, total)
    return values, best


def per_call(paths: list[Path], tmp: Path, args: argparse.Namespace) -> tuple[list[Values], float, float, float]:
    """(values per file, best total seconds of one call per file, 10-row call seconds, python -c pass seconds)."""
    best_total, values = float("inf"), list[Values]()
    for repetition in range(1, args.repeat + 1):
        total, values = 0.0, list[Values]()
        for path in paths:
            value, seconds = evaluate_call(path, tmp / f"{path.stem}.json", args.workers)
            values.append(value)
            total += seconds
            print(f"  per call (rep {repetition})   {path.name}: {seconds:7.2f}s")
        best_total = min(best_total, total)
    small = tmp / "ten_rows.jsonl"
    small.write_text("".join(paths[0].read_text(encoding="utf-8").splitlines(keepends=True)[:10]), encoding="utf-8")
    ten = float("inf")
    for _ in range(args.repeat):
        ten = min(ten, evaluate_call(small, tmp / "ten_rows.json", args.workers)[1])
    bare = best_process_seconds([sys.executable, "-c", "pass"], args.repeat)
    return values, best_total, ten, bare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=9077)
    parser.add_argument(
        "--workers", type=int, default=usable_cpus(), help="as rad3d evaluate's (default: the usable CPUs)"
    )
    parser.add_argument("--no-sbert", action="store_true", help="text metrics only (no model)")
    parser.add_argument("--no-per-call", action="store_true", help="skip the one-process-per-file case")
    parser.add_argument("--reference-process", type=Path, help=argparse.SUPPRESS)  # internal: one reference run
    parser.add_argument("--repeat", type=int, default=3, help="cold repetitions of the text metrics (best counts)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for both procedures (default 1: on a shared machine, spinning OpenMP "
        "threads make wall times erratic)",
    )
    args = parser.parse_args()
    if args.reference_process is not None:
        return reference_process(args.reference_process)
    import torch

    torch.set_num_threads(args.torch_threads)
    if not fixtures_dir().is_dir():
        print(f"fixtures not found at {fixtures_dir()} (set RAD3D_FIXTURES)")
        return 2

    _, t_wordnet = timed(lambda: (ensure_wordnet(), __import__("nltk.corpus").corpus.wordnet.ensure_loaded()))
    # the libraries both procedures call, imported once up front so neither pays the import
    for module in ("sacrebleu", "sacrebleu.metrics.helpers", "rouge_score.rouge_scorer", "nltk.translate.meteor_score"):
        importlib.import_module(module)
    model = None
    t_model = 0.0
    if not args.no_sbert:
        model, t_model = timed(lambda: load_model())
    # settle the collector's debt from loading WordNet (a full pass over its ~0.5M objects), which would
    # otherwise fall on whichever procedure runs first
    gc.collect()
    print(f"setup (shared, not timed below): WordNet load {t_wordnet:.1f}s, SBERT model load {t_model:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_files(Path(tmp), args.rows)
        print(
            f"inputs: the companion benchmark's full {args.rows:,}-row files are not available here; each file "
            f"repeats its 600 real fixture rows with one-word variants of answers and predictions, at the real "
            f"rows' share of distinct texts (same files for both procedures)"
        )
        for path in paths:
            fixture = fixtures_dir() / path.name.replace(f"_{args.rows}", "_600")
            for label, source in (("fixture", fixture), ("built", path)):
                p_norm, r_norm = text_metrics.normalize_pairs(*text_metrics.read_predictions_jsonl(source))
                print(
                    f"{label:>7} {source.name}: {len(p_norm)} rows; distinct: "
                    f"{distinct_share(p_norm):.0%} of predictions, {distinct_share(r_norm):.0%} of answers, "
                    f"{distinct_share(list(zip(p_norm, r_norm, strict=True))):.0%} of pairs"  # type: ignore[arg-type]
                )

        # Each repetition starts cold for both: our caches cleared and worker pool stopped, NLTK's
        # synset cache emptied. Ours runs first, so anything else a first run warms up favours the
        # reference. The ratio of the best times filters out a noisy machine's slow moments.
        t_ours, t_ref = float("inf"), float("inf")
        for repetition in range(1, args.repeat + 1):
            text_metrics.clear_caches()
            print(f"repetition {repetition} of {args.repeat}")
            ours, seconds = run_part(
                "ours text metrics",
                paths,
                lambda p: spatial_file_metrics(p, lowercase=True, metrics=TEXT_METRICS, workers=args.workers),
            )
            t_ours = min(t_ours, seconds)
            clear_nltk_synset_cache()
            reference, seconds_ref = run_part("reference text metrics", paths, reference_text_metrics)
            t_ref = min(t_ref, seconds_ref)
            print(f"  ratio of this repetition: {seconds_ref / seconds:.1f}x")
        ratios = [(f"text metrics (BLEU, ROUGE-1/2/L, METEOR), best of {args.repeat}", t_ref, t_ours)]
        calls: list[Values] = []
        if not args.no_per_call:
            print("per call: one `rad3d evaluate` process per file (process start, imports and WordNet counted)")
            calls, t_calls, t_ten, t_bare = per_call(paths, Path(tmp), args)
            reference_runs, t_ref_calls = reference_calls(paths, args.repeat)
            calls_label = f"text metrics, one rad3d evaluate process per file, best of {args.repeat}"
            ratios.append((f"{calls_label}, vs the reference in-process", t_ref, t_calls))
            ratios.append((f"{calls_label}, vs the reference as one process per file", t_ref_calls, t_calls))
        if model is not None:
            embedder = text_metrics.SentenceEmbedder()
            ours_cos, t_ours_sbert = run_part("ours SBERT", paths, lambda p: ours_sbert(p, embedder))
            ref_cos, t_ref_sbert = run_part("reference SBERT", paths, lambda p: reference_sbert(p, model))
            for mine, theirs, a, b in zip(ours, reference, ours_cos, ref_cos, strict=True):
                mine.update(a)
                theirs.update(b)
            ratios += [
                ("SBERT cosine", t_ref_sbert, t_ours_sbert),
                ("all of it", t_ref + t_ref_sbert, t_ours + t_ours_sbert),
            ]

    worst: dict[str, float] = {}
    for a, b in zip(ours, reference, strict=True):
        for key in b:
            worst[key] = max(worst.get(key, 0.0), abs(a[key] - b[key]))
    print("max |ours - reference| per metric: " + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))
    if calls:
        keys = ("count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor")
        equal = all(call[k] == ref[k] for call, ref in zip(calls, reference, strict=True) for k in keys)
        equal = equal and all(r[k] == ref[k] for r, ref in zip(reference_runs, reference, strict=True) for k in keys)
        worst_call = max(abs(call[k] - ref[k]) for call, ref in zip(calls, reference, strict=True) for k in keys)
        print(
            f"per-call values (JSON) equal to the reference's (in-process and per process): {equal} "
            f"(max |difference| {worst_call:.2e})"
        )
        print(
            f"fixed cost: rad3d evaluate on a 10-row file {t_ten:.2f}s, python -c pass {t_bare:.2f}s, "
            f"difference {t_ten - t_bare:.2f}s (best of {args.repeat} each)"
        )
    for label, reference_seconds, ours_seconds in ratios:
        print(
            f"{label}: reference {reference_seconds:.2f}s, ours {ours_seconds:.2f}s, "
            f"ratio {reference_seconds / ours_seconds:.1f}x "
            f"(workers={args.workers}, torch threads={args.torch_threads})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
