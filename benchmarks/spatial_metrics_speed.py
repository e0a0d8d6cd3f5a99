"""Speed of the CT-SpatialVQA text metrics: the benchmark's own procedure vs rad3d_pipeline.text_metrics.

Builds one 9,077-row predictions JSONL file per fixture file in fixtures/spatialvqa_mini/
(the 600 rows repeated; from the second repetition on, about half of the rows get a
deterministic edit of the prediction: a dropped word, two swapped words, an appended word or
changed capitalisation), so the data keep the answers shared between models and a realistic
share of repeated model outputs. Then, in one process, with WordNet and the SBERT model
already loaded for both:

- ``reference``: the straightforward per-row procedure of the benchmark's script: sacreBLEU
  ``corpus_bleu``; a rouge-score ``RougeScorer`` per item; NLTK ``meteor_score`` per item with
  its default stemmer and WordNet (no memoisation); SBERT ``encode`` of all predictions and all
  answers of each file;
- ``ours``: :func:`rad3d_pipeline.text_metrics.spatial_metrics` with one shared embedder.

Prints seconds per part, the ratio (reference / ours) and the largest difference of values.

    .venv/bin/python benchmarks/spatial_metrics_speed.py [--rows 9077] [--workers 1] [--no-sbert]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rad3d_pipeline import text_metrics
from rad3d_pipeline.embeddings import load_model
from rad3d_pipeline.wordnet_setup import ensure_wordnet

REPO = Path(__file__).resolve().parents[1]
FIXTURE_FILES = ("merlin_predictions_600.jsonl", "radfm_predictions_600.jsonl")
T = TypeVar("T")


def fixtures_dir() -> Path:
    root = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
    return root / "spatialvqa_mini"


def perturb(text: str, key: str, fraction: float) -> str:
    """A deterministic edit of ``text`` for about ``fraction`` of the keys (else unchanged)."""
    h = zlib.crc32(key.encode())
    if (h % 1000) >= fraction * 1000:
        return text
    words = text.split()
    kind = (h >> 10) % 4
    if kind == 0 and len(words) > 1:
        del words[(h >> 12) % len(words)]
    elif kind == 1 and len(words) > 1:
        i = (h >> 12) % (len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == 2:
        words.append(("likely", "probably", "seen", "noted", "present")[(h >> 12) % 5])
    else:
        return text.upper() if (h >> 12) % 2 else text.capitalize() + " "
    return " ".join(words)


def build_files(out_dir: Path, rows: int, fraction: float) -> list[Path]:
    paths = []
    for name in FIXTURE_FILES:
        base = [json.loads(line) for line in (fixtures_dir() / name).read_text(encoding="utf-8").splitlines() if line]
        path = out_dir / name.replace("_600", f"_{rows}")
        with path.open("w", encoding="utf-8") as handle:
            for i in range(rows):
                row = dict(base[i % len(base)])
                if i >= len(base):
                    row["prediction"] = perturb(str(row.get("prediction") or ""), f"{name}:{i}", fraction)
                handle.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths


def reference_procedure(path: Path, model: Any | None) -> dict[str, float]:
    """The benchmark script's way: plain per-row loops, nothing memoised."""
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score  # type: ignore[import-untyped]
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

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
    if model is not None:
        a = model.encode(preds, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        b = model.encode(refs, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        out["sbert_cosine"] = float(np.mean(np.sum(a * b, axis=1)))
    return out


CPU_SECONDS: list[float] = []  # process CPU time of each timed call, in order


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    CPU_SECONDS.append(time.process_time() - cpu)
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=9077)
    parser.add_argument("--perturb-fraction", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-sbert", action="store_true", help="text metrics only (no model)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for both procedures (default 1: on a shared machine, spinning OpenMP "
        "threads make wall times erratic)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    if not fixtures_dir().is_dir():
        print(f"fixtures not found at {fixtures_dir()} (set RAD3D_FIXTURES)")
        return 2

    _, t_wordnet = timed(lambda: (ensure_wordnet(), __import__("nltk.corpus").corpus.wordnet.ensure_loaded()))
    model = None
    t_model = 0.0
    if not args.no_sbert:
        model, t_model = timed(lambda: load_model())
    print(f"setup (shared, not timed below): WordNet load {t_wordnet:.1f}s, SBERT model load {t_model:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_files(Path(tmp), args.rows, args.perturb_fraction)
        print(
            f"inputs: the companion benchmark's full {args.rows:,}-row files are not available here; each file is "
            f"built from a 600-row fixture file, repeated, with a deterministic edit of about "
            f"{args.perturb_fraction:.0%} of the repeated predictions (same files for both procedures)"
        )
        for path in paths:
            preds, refs = text_metrics.read_predictions_jsonl(path)
            p_norm, r_norm = text_metrics.normalize_pairs(preds, refs)
            print(
                f"{path.name}: {len(preds)} rows, {len(set(p_norm))} distinct predictions, "
                f"{len(set(r_norm))} distinct answers, {len(set(zip(p_norm, r_norm, strict=True)))} distinct pairs"
            )

        # ours first: nltk's own internal synset caches then favour the reference run, not ours
        embedder = text_metrics.SentenceEmbedder()
        ours: list[dict[str, float]] = []
        t_ours = 0.0
        cpu_start = len(CPU_SECONDS)
        for path in paths:
            value, seconds = timed(
                lambda p=path: text_metrics.spatial_metrics_jsonl(
                    p, sbert=not args.no_sbert, embedder=embedder, workers=args.workers
                )
            )
            ours.append(value)
            t_ours += seconds
            print(f"  ours      {path.name}: {seconds:7.2f}s")
        cpu_ours = sum(CPU_SECONDS[cpu_start:])
        reference: list[dict[str, float]] = []
        t_ref = 0.0
        cpu_start = len(CPU_SECONDS)
        for path in paths:
            value, seconds = timed(lambda p=path: reference_procedure(p, model))
            reference.append(value)
            t_ref += seconds
            print(f"  reference {path.name}: {seconds:7.2f}s")

    worst: dict[str, float] = {}
    for a, b in zip(ours, reference, strict=True):
        for key in b:
            worst[key] = max(worst.get(key, 0.0), abs(a[key] - b[key]))
    print("max |ours - reference| per metric: " + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))
    cpu_ref = sum(CPU_SECONDS[cpu_start:])
    print(f"wall: reference {t_ref:.2f}s, ours {t_ours:.2f}s, ratio {t_ref / t_ours:.1f}x (workers={args.workers})")
    print(f"cpu:  reference {cpu_ref:.2f}s, ours {cpu_ours:.2f}s, ratio {cpu_ref / cpu_ours:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
