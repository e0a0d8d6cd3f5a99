"""Clinical metrics for the open-ended answers (Tasks 1-3): plug-ins of the metric engine.

Four metrics, each off unless what it needs is configured (:class:`ClinicalMetricConfig`), and each
then reported as a labelled ``not computed: <reason>`` value (NaN), never as 0:

- ``label_f1_micro`` / ``label_f1_macro``: CT-RATE's 18 abnormalities extracted from the reference
  answer (truth) and from the prediction (predicted) by a multi-label text classifier (a RadBERT-style
  sequence-classification checkpoint folder, :class:`AbnormalityClassifier`), F1 over the label
  matrices of a task (:func:`label_f1`);
- ``ratescore``: RaTEScore (the PyPI package ``RaTEScore``) with its NER and synonym models from local
  folders, per sample, averaged per task;
- ``radgraph_f1``: RadGraph F1 (RG_ER, the "partial" reward of the PyPI package ``radgraph``) with
  the extracted model archive in a local folder, per sample, averaged per task;
- ``green``: a GREEN-style LLM judge (prompt ``llm/prompts/green_judge.txt``) through
  :class:`rad3d_pipeline.llm.client.LlmClient` (its cache, retries and accounting): per sample
  ``matched / (matched + clinically significant errors)``, averaged per task; a request that ends
  without an answer is counted in ``failed`` and past ``green_max_failure_rate`` stops the stage.

Empty predictions are skipped by every metric (as 3D-RAD's protocol skips them) and counted in
``skipped_empty``. Every value carries ``source``: the checkpoint folder or the judge model, so a
number is never separated from what produced it. No model is downloaded: every path is local and
transformers is called with ``local_files_only=True``.

:func:`score_open_ended` gives one row per (model, task, metric); :func:`wide_table` pivots it
to one row per (model, task) for a leaderboard.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.ingest.labels import CTRATE_LABELS
from rad3d_pipeline.llm.parsers import ParseError
from rad3d_pipeline.llm.prompts import load_template

COMPUTED = "computed"
NOT_COMPUTED = "not computed"
UNDEFINED = "undefined"
NO_ABNORMALITY = "no abnormality in the references or predictions"
METRICS: tuple[str, ...] = ("label_f1_micro", "label_f1_macro", "ratescore", "radgraph_f1", "green")
RESULT_COLUMNS: tuple[str, ...] = (
    "model",
    "Task",
    "metric",
    "value",
    "n",
    "skipped_empty",
    "failed",
    "status",
    "source",
)
GREEN_TEMPLATE = "green_judge"
GREEN_CATEGORIES: tuple[str, ...] = ("a", "b", "c", "d", "e", "f")
RADGRAPH_MODEL_TYPES: tuple[str, ...] = ("radgraph", "radgraph-xl", "modern-radgraph-xl", "echograph")


class ClinicalMetricError(ValueError):
    """A configured clinical metric that cannot run as configured (one line: what and why)."""


@dataclass(frozen=True)
class ClinicalMetricConfig:
    """What the clinical metrics need; every field optional (an unset one turns its metric off).

    - ``label_classifier``: a transformers sequence-classification folder (config.json, weights,
      tokenizer files) with 18 outputs in CT-RATE's label order, or with ``id2label`` naming them;
    - ``ratescore_ner_model`` and ``ratescore_eval_model``: local folders of RaTEScore's NER model
      (Angelakeke/RaTE-NER-Deberta) and synonym encoder (FremyCompany/BioLORD-2023-C);
    - ``radgraph_model_dir``: the ``model_cache_dir`` of the radgraph package, holding the extracted
      archive under ``<radgraph_model_type>/`` (config.json, vocabulary/, weights.th); checked before
      the package is called, since the package downloads the archive when that folder is missing;
    - ``green_judge``: score with the GREEN-style LLM judge (needs an ``llm_client``).
    """

    label_classifier: Path | None = None
    label_threshold: float = 0.5
    ratescore_ner_model: Path | None = None
    ratescore_eval_model: Path | None = None
    ratescore_affinity: str = "long"
    radgraph_model_dir: Path | None = None
    radgraph_model_type: str = "radgraph-xl"
    radgraph_tokenizer_cache: Path | None = None
    green_judge: bool = False
    green_max_failure_rate: float = 0.05
    device: str = "cpu"
    batch_size: int = 16


class _ParsedCompleter(Protocol):
    async def complete_parsed(self, messages: list[dict[str, Any]], parse: Any, *, template_version: str) -> Any: ...


# --------------------------------------------------------------------------- availability


def _package_missing(name: str) -> str | None:
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"the {name} package is not installed"


def _folder_missing(path: Path | None, setting: str) -> str | None:
    if path is None:
        return f"{setting} is not set"
    if not Path(path).expanduser().is_dir():
        return f"{setting} {path} is not a folder"
    return None


def import_radgraph() -> Any:
    """The radgraph package, imported without its side effect on this process's logging.

    Its vendored AllenNLP calls ``logging.setLoggerClass(AllenNlpLogger)`` at import; every logger made
    afterwards in the process is then an ``AllenNlpLogger``, whose constructor Dagster's loggers cannot
    call (``TypeError: ... unexpected keyword argument 'level'``), so later runs in a ``rad3d build``
    process would fail. The logger class is put back.
    """
    import logging

    previous = logging.getLoggerClass()
    try:
        import radgraph
    finally:
        logging.setLoggerClass(previous)
    return radgraph


def _radgraph_missing(config: ClinicalMetricConfig) -> str | None:
    missing = _folder_missing(config.radgraph_model_dir, "radgraph_model_dir")
    if missing:
        return missing
    assert config.radgraph_model_dir is not None
    if config.radgraph_model_type not in RADGRAPH_MODEL_TYPES:
        return f"radgraph_model_type {config.radgraph_model_type!r} is not one of {', '.join(RADGRAPH_MODEL_TYPES)}"
    model = Path(config.radgraph_model_dir).expanduser() / config.radgraph_model_type
    if not (model / "config.json").is_file() or not (model / "weights.th").is_file():
        # The package would download the archive from the Hub here: refuse instead.
        return f"{model} does not hold the extracted {config.radgraph_model_type} archive (config.json, weights.th)"
    return None


def available_metrics(config: ClinicalMetricConfig, llm_client: object | None = None) -> dict[str, str | None]:
    """Each metric's reason for not being computed, or None when it will be (nothing is imported or loaded)."""
    label = _folder_missing(config.label_classifier, "label_classifier") or _package_missing("transformers")
    ratescore = (
        _folder_missing(config.ratescore_ner_model, "ratescore_ner_model")
        or _folder_missing(config.ratescore_eval_model, "ratescore_eval_model")
        or _package_missing("RaTEScore")
    )
    radgraph = _radgraph_missing(config) or _package_missing("radgraph")
    green: str | None = None
    if not config.green_judge:
        green = "green_judge is off"
    elif llm_client is None:
        green = "no LLM client is configured for the judge"
    return {
        "label_f1_micro": label,
        "label_f1_macro": label,
        "ratescore": ratescore,
        "radgraph_f1": radgraph,
        "green": green,
    }


# --------------------------------------------------------------------------- abnormality labels


@dataclass(frozen=True)
class LabelF1:
    micro: float  # NaN when no label is positive in either matrix
    macro: float  # mean over the labels positive in the truth or the prediction; NaN when none is
    per_label: tuple[float, ...]  # NaN for a label positive nowhere
    labels_scored: int  # labels in the macro average


def label_f1(truth: np.ndarray, predicted: np.ndarray) -> LabelF1:
    """Micro and macro F1 of two (samples x labels) 0/1 matrices.

    A label with no positive in either matrix has no F1 (0/0): it is left out of the macro average
    rather than counted as 0 or 1, and ``labels_scored`` says how many labels the average covers.
    """
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"label matrices of shapes {t.shape} and {p.shape}: need two equal (samples x labels)")
    tp = (t & p).sum(axis=0).astype(float)
    fp = (~t & p).sum(axis=0).astype(float)
    fn = (t & ~p).sum(axis=0).astype(float)
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_label = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), np.nan)
    total = denominator.sum()
    micro = float(2 * tp.sum() / total) if total > 0 else math.nan
    scored = int(np.isfinite(per_label).sum())
    macro = float(np.nanmean(per_label)) if scored else math.nan
    return LabelF1(micro, macro, tuple(float(v) for v in per_label), scored)


def _label_permutation(id2label: dict[int, str], num_labels: int, folder: Path) -> np.ndarray:
    """Output index of each CT-RATE label, in CT-RATE's column order."""
    if num_labels != len(CTRATE_LABELS):
        raise ClinicalMetricError(
            f"label classifier {folder}: {num_labels} outputs, CT-RATE has {len(CTRATE_LABELS)} abnormalities"
        )
    names = {int(i): str(name).strip().lower() for i, name in id2label.items()}
    wanted = [label.lower() for label in CTRATE_LABELS]
    if set(names.values()) == set(wanted):
        by_name = {name: i for i, name in names.items()}
        return np.array([by_name[label] for label in wanted], dtype=np.int64)
    if all(re.fullmatch(r"label_\d+", name) for name in names.values()):
        return np.arange(len(CTRATE_LABELS))  # unnamed outputs: CT-RATE's column order
    unknown = sorted(set(names.values()) - set(wanted))
    raise ClinicalMetricError(
        f"label classifier {folder}: id2label names {', '.join(unknown[:3])} are not CT-RATE abnormalities"
    )


class AbnormalityClassifier:
    """A multi-label sequence classifier over CT-RATE's 18 abnormalities, from a local folder.

    Probabilities are the sigmoid of the logits (multi-label), columns in CT-RATE's label order;
    a label is present when its probability reaches ``threshold``.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        threshold: float = 0.5,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ClinicalMetricError(f"label classifier {self.folder} is not a folder")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClinicalMetricError(f"label classifier {self.folder} cannot be loaded: {first}") from exc
        self.model.eval().to(device)
        self.device = device
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        limit = int(getattr(self.model.config, "max_position_embeddings", max_length) or max_length)
        self.max_length = min(max_length, limit)
        self.order = _label_permutation(
            dict(self.model.config.id2label), int(self.model.config.num_labels), self.folder
        )

    @property
    def label(self) -> str:
        return f"{self.folder} (threshold {self.threshold:g})"

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts) x 18) float64 probabilities; each distinct text is run once."""
        import torch

        distinct = list(dict.fromkeys(texts))
        out = np.zeros((len(distinct), len(CTRATE_LABELS)), dtype=np.float64)
        for start in range(0, len(distinct), self.batch_size):
            batch = distinct[start : start + self.batch_size]
            encoded = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**encoded).logits
            probs = torch.sigmoid(logits.double()).cpu().numpy()
            out[start : start + len(batch)] = probs[:, self.order]
        where = {text: i for i, text in enumerate(distinct)}
        return out[[where[t] for t in texts]] if texts else out[:0]

    def labels(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts) x 18) 0/1 labels."""
        return (self.probabilities(texts) >= self.threshold).astype(np.int8)


# --------------------------------------------------------------------------- RaTEScore and RadGraph F1


def _check_scores(name: str, values: Sequence[Any], n: int) -> list[float]:
    scores = [float(v) for v in values]
    if len(scores) != n:
        raise ClinicalMetricError(f"{name} returned {len(scores)} scores for {n} pairs")
    bad = [i for i, v in enumerate(scores) if not math.isfinite(v)]
    if bad:  # a NaN would otherwise leave the pair out of the task mean unseen
        raise ClinicalMetricError(f"{name} returned {scores[bad[0]]} for pair {bad[0]} ({len(bad)} of {n} pairs)")
    return scores


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_loguru(*modules: str) -> None:
    """Silence loguru in ``modules`` (RaTEScore's sentence splitter PyRuSH logs every token at DEBUG)."""
    try:
        from loguru import logger
    except ImportError:
        return
    for module in modules:
        logger.disable(module)


def _ratescore_label_problem(idx2label: object, affinity: object) -> str | None:
    """Why the NER model's labels do not fit RaTEScore's affinity matrix (the package would KeyError), or None."""
    if not isinstance(idx2label, dict) or not isinstance(affinity, dict):
        return None
    types = {str(k[0]) for k in affinity if isinstance(k, tuple) and k != ("NEG", "WEIGHT")}
    odd = sorted(
        str(label)
        for label in idx2label.values()
        if str(label) != "O" and not (str(label)[:2] in ("B-", "I-") and str(label)[2:] in types)
    )
    if odd:
        return f"labels {', '.join(odd[:3])} are not O or B-/I- of {', '.join(sorted(types))}"
    return None


def ratescore_scorer(config: ClinicalMetricConfig) -> tuple[Callable[[list[str], list[str]], list[float]], str]:
    """RaTEScore as its package documents it: ``RaTEScore(bert_model, eval_model).compute_score(cands, refs)``.

    Returns ``(score(predictions, references) -> per-pair scores, source label)``. The package loads
    both models with ``from_pretrained`` on the configured local folders (no download). Note the
    package's own rule: a pair where either text has no entity scores 0.5.
    """
    missing = (
        _folder_missing(config.ratescore_ner_model, "ratescore_ner_model")
        or _folder_missing(config.ratescore_eval_model, "ratescore_eval_model")
        or _package_missing("RaTEScore")
    )
    if missing:
        raise ClinicalMetricError(f"RaTEScore: {missing}")
    assert config.ratescore_ner_model is not None and config.ratescore_eval_model is not None
    from RaTEScore import RaTEScore  # the package imports medspacy at import time: lazily, only when used

    _quiet_loguru("PyRuSH", "PyFastNER")
    ner = Path(config.ratescore_ner_model).expanduser()
    encoder = Path(config.ratescore_eval_model).expanduser()
    try:
        scorer = RaTEScore(
            bert_model=str(ner),
            eval_model=str(encoder),
            batch_size=config.batch_size,
            use_gpu=config.device != "cpu",
            affinity_matrix=config.ratescore_affinity,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ClinicalMetricError(f"RaTEScore: {ner} + {encoder} cannot be loaded: {_first_line(exc)}") from exc
    problem = _ratescore_label_problem(getattr(scorer, "idx2label", None), getattr(scorer, "affinity_matrix", None))
    if problem:
        raise ClinicalMetricError(f"RaTEScore: NER model {ner} does not fit: {problem}")

    def score(predictions: list[str], references: list[str]) -> list[float]:
        return _check_scores("RaTEScore", scorer.compute_score(list(predictions), list(references)), len(predictions))

    return score, f"RaTEScore {ner} + {encoder} (affinity {config.ratescore_affinity})"


def _radgraph_incompatible(exc: BaseException) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = f"radgraph {version('radgraph')} with transformers {version('transformers')}"
    except PackageNotFoundError:
        found = "radgraph with this transformers"
    return f"{found} cannot run ({_first_line(exc)}); radgraph needs transformers<5"


def radgraph_scorer(config: ClinicalMetricConfig) -> tuple[Callable[[list[str], list[str]], list[float]], str]:
    """RadGraph F1 (RG_ER) as its package documents it: ``F1RadGraph(reward_level="all", ...)(hyps, refs)``.

    Returns ``(score(predictions, references) -> per-pair RG_ER, source label)``. The reward list of
    ``reward_level="all"`` is (RG_E, RG_ER, RG_bar_ER); RG_ER (entities and relations, "partial")
    is the one radiology report generation papers report.
    """
    missing = _radgraph_missing(config) or _package_missing("radgraph")
    if missing:
        raise ClinicalMetricError(f"RadGraph F1: {missing}")
    assert config.radgraph_model_dir is not None
    F1RadGraph = import_radgraph().F1RadGraph

    model_dir = Path(config.radgraph_model_dir).expanduser()
    kwargs: dict[str, Any] = {"model_cache_dir": str(model_dir), "cuda": -1 if config.device == "cpu" else 0}
    if config.radgraph_tokenizer_cache is not None:
        kwargs["tokenizer_cache_dir"] = str(Path(config.radgraph_tokenizer_cache).expanduser())
    try:
        scorer = F1RadGraph(reward_level="all", model_type=config.radgraph_model_type, **kwargs)
    except AttributeError as exc:  # its vendored allennlp calls tokenizer APIs that transformers 5 removed
        raise ClinicalMetricError(f"RadGraph F1: {_radgraph_incompatible(exc)}") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ClinicalMetricError(
            f"RadGraph F1: {model_dir / config.radgraph_model_type} cannot be loaded: {_first_line(exc)}"
        ) from exc

    def score(predictions: list[str], references: list[str]) -> list[float]:
        try:
            _, rewards, _, _ = scorer(hyps=list(predictions), refs=list(references))
        except AttributeError as exc:
            raise ClinicalMetricError(f"RadGraph F1: {_radgraph_incompatible(exc)}") from exc
        if not isinstance(rewards, (tuple, list)) or len(rewards) != 3:
            raise ClinicalMetricError("RadGraph F1 returned rewards not in the (RG_E, RG_ER, RG_bar_ER) shape")
        return _check_scores("RadGraph F1", rewards[1], len(predictions))

    return score, f"RadGraph F1 RG_ER {model_dir / config.radgraph_model_type}"


# --------------------------------------------------------------------------- GREEN-style judge


@dataclass(frozen=True)
class GreenCounts:
    significant: dict[str, int]
    insignificant: dict[str, int]
    matched: int

    @property
    def significant_total(self) -> int:
        return sum(self.significant.values())

    @property
    def score(self) -> float:
        """``matched / (matched + significant errors)``; 0 with no matched finding (as GREEN's code)."""
        if self.matched == 0:
            return 0.0
        return self.matched / (self.matched + self.significant_total)


_THINK = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|\Z)", re.DOTALL | re.IGNORECASE)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParseError(f"{where}: {value!r} is not a count")
    try:
        number = float(value)
    except ValueError:
        raise ParseError(f"{where}: {value!r} is not a count") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ParseError(f"{where}: {value!r} is not a whole number >= 0")
    return int(number)


def _categories(value: object, where: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ParseError(f"{where}: expected an object with the counts (a) to (f)")
    counts: dict[str, int] = {}
    for key, item in value.items():
        letter = re.sub(r"[^a-f]", "", str(key).lower())[:1]
        if letter not in GREEN_CATEGORIES:
            raise ParseError(f"{where}: unknown category {key!r}")
        counts[letter] = counts.get(letter, 0) + _count(item, f"{where}.{key}")
    return {c: counts.get(c, 0) for c in GREEN_CATEGORIES}


def _json_object(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start != -1:
        depth = 0
        for end in range(start, len(text)):
            if text[end] == "{":
                depth += 1
            elif text[end] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : end + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(value, dict) and "matched_findings" in value:
                        return value
                    break
        start = text.find("{", start + 1)
    return None


_SECTION = re.compile(
    r"\[(clinically significant errors|clinically insignificant errors|matched findings)\]\s*:?", re.I
)
_ITEM = re.compile(r"\(([a-f])\)[^:\n]*:\s*(\d+)", re.I)


def _green_text(text: str) -> GreenCounts:
    """GREEN's own format: ``[Clinically Significant Errors]: (a) ...: 1. ...`` and ``[Matched Findings]: 2.``"""
    parts = _SECTION.split(text)
    sections: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[name.lower()] = body
    if "clinically significant errors" not in sections or "matched findings" not in sections:
        raise ParseError("no JSON object with matched_findings and no [Clinically Significant Errors] section")
    matched = re.match(r"\s*(\d+)", sections["matched findings"])
    if matched is None:
        raise ParseError("[Matched Findings] without a count")

    def counts(body: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for letter, number in _ITEM.findall(body):
            found[letter.lower()] = found.get(letter.lower(), 0) + int(number)
        return {c: found.get(c, 0) for c in GREEN_CATEGORIES}

    significant = counts(sections["clinically significant errors"])
    if not _ITEM.search(sections["clinically significant errors"]):
        raise ParseError("[Clinically Significant Errors] without (a)-(f) counts")
    return GreenCounts(significant, counts(sections.get("clinically insignificant errors", "")), int(matched.group(1)))


def parse_green_reply(text: str) -> GreenCounts:
    """The judge's counts: the prompt's JSON (anywhere in the reply), else GREEN's bracketed text format."""
    cleaned = _THINK.sub("", text.replace("\r\n", "\n")).replace("**", "")
    value = _json_object(cleaned)
    if value is None:
        return _green_text(cleaned)
    if "significant_errors" not in value:
        raise ParseError("JSON reply without significant_errors")
    return GreenCounts(
        _categories(value["significant_errors"], "significant_errors"),
        _categories(value.get("insignificant_errors", {}), "insignificant_errors"),
        _count(value["matched_findings"], "matched_findings"),
    )


def green_messages(question: str, reference: str, candidate: str) -> tuple[list[dict[str, Any]], str]:
    """The judge's messages for one answer and the template version (part of every cache key)."""
    template = load_template(GREEN_TEMPLATE)
    return template.messages(Question=question, Reference=reference, Candidate=candidate), template.template_version


@dataclass
class GreenResult:
    scores: list[float]  # NaN where the request ended without an answer
    counts: list[GreenCounts | None]
    failures: list[dict[str, Any]] = field(default_factory=list)  # index, error of each failed request


async def green_scores_async(
    client: _ParsedCompleter, questions: Sequence[str], references: Sequence[str], candidates: Sequence[str]
) -> GreenResult:
    """One judge request per (question, reference, candidate), concurrently (the client bounds concurrency)."""

    async def one(i: int) -> Any:
        messages, version = green_messages(questions[i], references[i], candidates[i])
        return await client.complete_parsed(messages, parse_green_reply, template_version=version)

    outcomes = await asyncio.gather(*(one(i) for i in range(len(candidates))))
    result = GreenResult([], [])
    for i, outcome in enumerate(outcomes):
        value = getattr(outcome, "value", None)
        if isinstance(value, GreenCounts):
            result.scores.append(value.score)
            result.counts.append(value)
        else:
            result.scores.append(math.nan)
            result.counts.append(None)
            result.failures.append({"index": i, "error": str(getattr(outcome, "error", None) or "no answer")})
    return result


def green_scores(
    client: _ParsedCompleter, questions: Sequence[str], references: Sequence[str], candidates: Sequence[str]
) -> GreenResult:
    """:func:`green_scores_async` from synchronous code (then closes the client's connections, if it has any)."""

    async def main() -> GreenResult:
        try:
            return await green_scores_async(client, questions, references, candidates)
        finally:
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()

    return asyncio.run(main())


# --------------------------------------------------------------------------- per task


def _column(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def open_ended_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The open-ended rows as ``model, Task, Question, Answer, prediction`` (engine or lower-case names)."""
    task = _column(frame, "Task", "task")
    answer = _column(frame, "Answer", "answer", "reference")
    prediction = _column(frame, "prediction", "Prediction")
    if task is None or answer is None or prediction is None:
        have = ", ".join(map(str, frame.columns))
        raise ClinicalMetricError(f"clinical metrics need task, answer and prediction columns; the frame has {have}")
    rows = frame
    kind = _column(frame, "QuestionType", "question_type")
    if kind is not None:
        rows = rows[rows[kind].astype(str).str.lower() == "open"]
    model = _column(rows, "model")
    question = _column(rows, "Question", "question")
    return pd.DataFrame(
        {
            "model": rows[model].astype(str).to_numpy() if model else "",
            "Task": rows[task].astype(int).to_numpy(),
            "Question": rows[question].fillna("").astype(str).to_numpy() if question else "",
            "Answer": rows[answer].fillna("").astype(str).to_numpy(),
            "prediction": rows[prediction].fillna("").astype(str).to_numpy(),
        }
    )


@dataclass
class ClinicalScores:
    """Per-row results of :func:`clinical_sample_scores` (rows of :func:`open_ended_frame`)."""

    rows: pd.DataFrame  # open_ended_frame + one float column per per-sample metric (NaN: not scored)
    reference_labels: np.ndarray | None  # (rows x 18) 0/1, when the label classifier ran
    prediction_labels: np.ndarray | None
    status: dict[str, str]  # metric -> computed / not computed: reason
    source: dict[str, str]  # metric -> checkpoint or judge
    failures: list[dict[str, Any]] = field(default_factory=list)  # GREEN requests without an answer


def _spread(n: int, where: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """``values`` at positions ``where`` of an array of ``n`` NaNs."""
    out = np.full(n, np.nan)
    out[where] = np.asarray(values, dtype=float)
    return out


def _judge_label(client: object, version: str) -> str:
    endpoint = getattr(client, "endpoint", None)
    model = getattr(endpoint, "model", None) or type(client).__name__
    return f"{model} ({version})"


def clinical_sample_scores(
    frame: pd.DataFrame,
    config: ClinicalMetricConfig,
    llm_client: _ParsedCompleter | None = None,
    *,
    classifier: AbnormalityClassifier | None = None,
) -> ClinicalScores:
    """Every configured clinical metric on the open-ended rows of ``frame`` (see the module docstring).

    An unconfigured metric is ``not computed: <reason>`` and NaN. A configured one that fails to
    load raises :class:`ClinicalMetricError` (one line): a wrong path is a user's mistake, not a
    reason to publish a table without the metric. GREEN failures past ``green_max_failure_rate``
    raise :class:`rad3d_pipeline.common.errors.LlmStageError`.
    """
    rows = open_ended_frame(frame)
    reasons = available_metrics(config, llm_client)
    status = {m: COMPUTED if reasons[m] is None else f"{NOT_COMPUTED}: {reasons[m]}" for m in METRICS}
    source = {m: "" for m in METRICS}
    for name in ("ratescore", "radgraph_f1", "green"):
        rows[name] = np.nan
    kept = np.flatnonzero(rows["prediction"].str.strip().to_numpy() != "")
    all_preds = [str(v) for v in rows["prediction"]]
    all_refs = [str(v) for v in rows["Answer"]]
    preds = [all_preds[i] for i in kept]
    refs = [all_refs[i] for i in kept]
    result = ClinicalScores(rows, None, None, status, source)
    if reasons["label_f1_micro"] is None:
        if classifier is None:
            assert config.label_classifier is not None
            classifier = AbnormalityClassifier(
                config.label_classifier,
                threshold=config.label_threshold,
                device=config.device,
                batch_size=config.batch_size,
            )
        labels = classifier.labels([*refs, *preds])
        result.reference_labels, result.prediction_labels = labels[: len(refs)], labels[len(refs) :]
        source["label_f1_micro"] = source["label_f1_macro"] = classifier.label
    for name, make in (("ratescore", ratescore_scorer), ("radgraph_f1", radgraph_scorer)):
        if reasons[name] is None:
            score, source[name] = make(config)
            if preds:
                rows[name] = _spread(len(rows), kept, score(preds, refs))
    if reasons["green"] is None and llm_client is not None:
        questions = [str(rows["Question"].iat[int(i)]) for i in kept]
        green = green_scores(llm_client, questions, refs, preds) if preds else GreenResult([], [])
        if preds:
            rows["green"] = _spread(len(rows), kept, green.scores)
        source["green"] = _judge_label(llm_client, load_template(GREEN_TEMPLATE).template_version)
        result.failures = [
            {**f, "row": int(kept[f["index"]]), "model": str(rows["model"].iat[int(kept[f["index"]])])}
            for f in green.failures
        ]
        failed, asked = len(green.failures), len(preds)
        if failed and failed / asked > config.green_max_failure_rate:
            first = green.failures[0]["error"]
            raise LlmStageError(
                f"clinical metric green: {failed:,} of {asked:,} judge requests failed "
                f"({failed / asked * 100:.1f}%, budget {config.green_max_failure_rate * 100:g}%): first: {first}"
            )
    return result


def _row(
    model: str, task: int, metric: str, value: float, n: int, skipped: int, failed: int, status: str, source: str
) -> dict[str, Any]:
    return dict(zip(RESULT_COLUMNS, (model, task, metric, value, n, skipped, failed, status, source), strict=True))


def aggregate(scores: ClinicalScores) -> pd.DataFrame:
    """One row per (model, task, metric): value, rows scored, empty predictions skipped, failed requests, status."""
    rows = scores.rows
    empty = rows["prediction"].str.strip().to_numpy() == ""
    kept_index = np.cumsum(~empty) - 1  # position of each kept row among the kept rows
    failed_rows = {f["row"] for f in scores.failures}
    out: list[dict[str, Any]] = []
    for (model, task), group in rows.groupby(["model", "Task"], sort=True):
        where = group.index.to_numpy()
        kept = where[~empty[where]]
        skipped = int(empty[where].sum())
        for metric in METRICS:
            status, source = scores.status[metric], scores.source[metric]
            if status != COMPUTED:
                out.append(_row(str(model), int(str(task)), metric, math.nan, 0, skipped, 0, status, source))
                continue
            if metric.startswith("label_f1"):
                assert scores.reference_labels is not None and scores.prediction_labels is not None
                f1 = label_f1(scores.reference_labels[kept_index[kept]], scores.prediction_labels[kept_index[kept]])
                value = f1.micro if metric == "label_f1_micro" else f1.macro
                state = COMPUTED if math.isfinite(value) else f"{UNDEFINED}: {NO_ABNORMALITY}"
                if not len(kept):
                    state = f"{UNDEFINED}: every prediction is empty"
                out.append(_row(str(model), int(str(task)), metric, value, len(kept), skipped, 0, state, source))
                continue
            values = rows.loc[kept, metric].to_numpy(dtype=float)
            failed = sum(1 for i in kept if i in failed_rows)
            scored = values[np.isfinite(values)]
            value = float(scored.mean()) if len(scored) else math.nan
            state = COMPUTED
            if not len(kept):
                state = f"{UNDEFINED}: every prediction is empty"
            elif not len(scored):
                state = f"{NOT_COMPUTED}: every judge request failed"
            out.append(_row(str(model), int(str(task)), metric, value, len(scored), skipped, failed, state, source))
    return pd.DataFrame(out, columns=list(RESULT_COLUMNS))


def score_open_ended(
    frame: pd.DataFrame,
    config: ClinicalMetricConfig,
    llm_client: _ParsedCompleter | None = None,
    *,
    classifier: AbnormalityClassifier | None = None,
) -> pd.DataFrame:
    """Per-task clinical metrics of the open-ended rows of ``frame`` (columns :data:`RESULT_COLUMNS`)."""
    return aggregate(clinical_sample_scores(frame, config, llm_client, classifier=classifier))


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task): each metric's value, and ``<metric>_status`` beside it."""
    if long.empty:
        return pd.DataFrame(columns=["model", "Task", *[c for m in METRICS for c in (m, f"{m}_status")]])
    values = long.pivot(index=["model", "Task"], columns="metric", values="value")
    states = long.pivot(index=["model", "Task"], columns="metric", values="status")
    wide = pd.DataFrame(index=values.index)
    for metric in METRICS:
        if metric in values.columns:
            wide[metric] = values[metric]
            wide[f"{metric}_status"] = states[metric]
    return wide.reset_index()
