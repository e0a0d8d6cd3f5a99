"""What the LLM stages would send and cost, sending nothing (``rad3d build --plan``, the ``llm_plan`` asset).

The plan runs the stages' own code (:mod:`rad3d_pipeline.open_qa.llm_generation`, the consistency sample, the
curation) with a :class:`PlanningClient`: a client that answers from the response cache only and
records every request the stage asks for. So a planned request has the very cache key the build
would compute, and "cached" means exactly what the build would read from the cache:

- a request is **cached** when its chain of cached attempts ends in a reply that parses (a cached
  reject is followed by its next attempt, as the client does); its parsed value feeds the next
  stage of the plan exactly as it will feed the build;
- a request is **to send** when the chain reaches an attempt that is not cached: that attempt is
  the first HTTP request the build will send for it (retries of unparsable replies are not
  planned: they cannot be known before the reply);
- a request another stage of the same plan sends first is **shared** (the build finds it cached).

Where a stage's inputs do not exist yet (scores of candidates not generated, curated QA of
candidates not scored), its figures are **estimates** (``estimate: true``), from the prompts' own
specification and the inputs, the cache's history where it has some, else documented defaults:

- candidates of a generation request not cached: what the prompt asks for, on the inputs: Figure 11's
  six pairs per distinct report (two of Task 1, four of Task 2) on every volume of the report, Figure
  13's one pair per distinct measurement sentence on every row of it; scoring asks each distinct pair
  once, so the pairs count times the share of distinct pairs among pairs of different requests: measured
  on this plan's cached replies (``MIN_HISTORY`` requests or more), else ``DEFAULT_DISTINCT_SHARE`` (the
  3D-RAD release: 240 of 244);
- consistency judges: the task-proportional sample is min(sample size, candidate rows); its distinct
  pairs are the candidates' distinct pairs times (sample / rows);
- the spatial judge (every distinct curated pair): the distinct pairs of all candidates times the keep
  share of the curation: measured on this plan's scored candidates, else the filter on the cache's
  scoring replies (the scorer's, else every model's), else ``DEFAULT_KEEP_SHARE`` (the paper's
  validation: 53 of 600 pairs inconsistent with their report); the cap of 10 is not modelled there;
- the prompt tokens of an estimated request: the mean over the same template rendered with the rules
  backend's pairs on the same reports.

Tokens are counted on the rendered messages: with a ``tokenizers`` tokenizer file when one is
configured (``RAD3D_TOKENIZER``; the content's tokens plus ``MESSAGE_OVERHEAD`` per message and
``REPLY_OVERHEAD``, OpenAI's chat format), else with :func:`rule_tokens` (``DEFAULT_CHARS_PER_TOKEN``
letters and spaces per token, one token per run of digits and symbols, which BPE tokenizers split off)
plus the same overheads, scaled per model by the cache's usage figures (the prompt tokens the endpoint
reported over the rule's count of the same prompts; a model without cached replies takes the ratio over
every cached reply; 1 when the cache has none). Completion tokens: the mean of the cached replies of the
template, else the tokens of the reply the prompt asks for (its desired format or example response,
filled from the inputs: the rules backend's pairs with answers as long as the prompt allows, the
measurement sentences). Cost: the endpoint's prices per million tokens; the Batch API at
``BATCH_DISCOUNT`` of it.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from rad3d_pipeline.common.errors import InputFileError
from rad3d_pipeline.ingest.patients import shard_column
from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient, Outcome, run_all, template_name
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS, ParseError, parse_scores
from rad3d_pipeline.llm.prompts import load_template, starters_for
from rad3d_pipeline.open_qa.curation import CurationSettings, curate, passes_filter
from rad3d_pipeline.open_qa.llm_generation import (
    generate_task3,
    generate_task12,
    score_candidates,
    stage1_sentences_llm,
)
from rad3d_pipeline.open_qa.rules_backend import MODEL as RULES_MODEL
from rad3d_pipeline.open_qa.rules_backend import generate_rules
from rad3d_pipeline.open_qa.tasks_open import candidates_frame, report_key
from rad3d_pipeline.quality.judges import sample_for_consistency

T = TypeVar("T")

DEFAULT_CHARS_PER_TOKEN = 4.0  # letters and spaces per token of English (OpenAI's BPE tokenizers)
MESSAGE_OVERHEAD = 3  # tokens per chat message (OpenAI's chat format)
REPLY_OVERHEAD = 3  # tokens priming the reply
BATCH_DISCOUNT = 0.5  # the Batch API's price, as a share of the ordinary one
# Before any reply is cached: the share of distinct (question, answer) pairs among the pairs of different
# requests (in the 3D-RAD release, 240 of the 244 pairs of distinct scans of the ctrate_mini patients), and
# the share of scored pairs the curation keeps (the paper's human validation found 53 of 600 sampled pairs
# inconsistent with their report, the kind the five-dimension filter drops; every other pair of a
# generator that follows the prompt scores 3 or more).
DEFAULT_DISTINCT_SHARE = 240 / 244
DEFAULT_KEEP_SHARE = 1 - 53 / 600
PROXY_REPORTS = 300  # reports the rules backend renders to give estimated requests their text
MIN_HISTORY = 20  # cached requests (or scores) needed before their shares replace the defaults
# What one reply of each generation prompt yields, as the prompt asks (Figure 11: exactly six pairs, aspects
# 1-2 Task 1 and 3-6 Task 2; Figure 13: one pair per measurement sentence).
PAIRS_PER_REPORT: dict[int, int] = {1: 2, 2: 4}
PAIRS_PER_SENTENCE = 1
STAGES: tuple[str, ...] = ("qa_candidates", "qa_scores", "scoring_consistency", "spatial_qa")
STAGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "qa_candidates": ("task12", "task3_stage1", "task3_stage2"),
    "qa_scores": ("scoring",),
    "scoring_consistency": ("scoring",),
    "spatial_qa": ("spatial_judge",),
}
NOT_CACHED = "planned"  # the error kind of a planned request's outcome (nothing is sent)
_SYMBOLS = re.compile(r"[^\sA-Za-z]+")


# --------------------------------------------------------------------------- token counting


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def prompt_chars(messages: Sequence[dict[str, Any]]) -> int:
    return sum(len(message_text(m)) for m in messages)


def rule_tokens(text: str) -> float:
    """The default count: letters and spaces at ``DEFAULT_CHARS_PER_TOKEN`` per token, and one token per run of
    digits and symbols (BPE tokenizers split those off: JSON, numbers and lists count more than prose)."""
    symbols = _SYMBOLS.findall(text)
    return (len(text) - sum(len(s) for s in symbols)) / DEFAULT_CHARS_PER_TOKEN + len(symbols)


def rule_prompt_tokens(messages: Sequence[dict[str, Any]]) -> float:
    return sum(rule_tokens(message_text(m)) for m in messages) + MESSAGE_OVERHEAD * len(messages) + REPLY_OVERHEAD


@dataclass(frozen=True)
class CacheUsage:
    """What the cache says: per model the endpoint's prompt tokens over the rule's, per template the mean
    completion tokens, and per model the scores of its cached scoring replies (the curation's history)."""

    scale: dict[str, float] = field(default_factory=dict)
    completion_mean: dict[str, float] = field(default_factory=dict)
    replies: int = 0
    overall_scale: float | None = None  # over every model's cached replies
    scores: dict[str, list[dict[str, int]]] = field(default_factory=dict)


def cache_usage(path: Path) -> CacheUsage:
    """Read once from the cache database (read-only); an absent cache gives the defaults."""
    if not path.is_file():
        return CacheUsage()
    rule: dict[str, float] = {}
    tokens: dict[str, int] = {}
    completion: dict[str, list[int]] = {}
    scores: dict[str, list[dict[str, int]]] = {}
    replies = 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        rows = conn.execute("SELECT model, prompt_tokens, completion_tokens, request, text, finish_reason FROM replies")
        for model, prompt_tokens, completion_tokens, request, text, finish in rows:
            replies += 1
            try:
                parsed = json.loads(request)
            except (TypeError, ValueError):
                continue
            name = template_name(str(parsed.get("template_version", "")))
            if int(prompt_tokens or 0) > 0:
                rule[model] = rule.get(model, 0.0) + rule_prompt_tokens(parsed.get("messages") or [])
                tokens[model] = tokens.get(model, 0) + int(prompt_tokens)
            if int(completion_tokens or 0) > 0:
                completion.setdefault(name, []).append(int(completion_tokens))
            if name == "scoring" and finish != "length":
                with contextlib.suppress(ParseError):
                    scores.setdefault(str(model), []).append(parse_scores(str(text)))
    finally:
        conn.close()
    all_rule, all_tokens = sum(rule.values()), sum(tokens.values())
    return CacheUsage(
        {m: tokens[m] / rule[m] for m in tokens if tokens[m] > 0 and rule[m] > 0},
        {name: sum(v) / len(v) for name, v in completion.items()},
        replies,
        all_tokens / all_rule if all_rule > 0 and all_tokens > 0 else None,
        scores,
    )


class TokenizerFileError(InputFileError):
    """The configured tokenizer file is missing or unreadable (one line, no traceback)."""


class TokenCounter:
    """Tokens of rendered messages and replies: a tokenizer file, else the rule calibrated on the cache."""

    def __init__(self, usage: CacheUsage, tokenizer_file: str | None = None) -> None:
        self.usage = usage
        self.tokenizer_file = tokenizer_file
        self._tokenizer: Any = None
        self.expected: dict[str, list[str]] = {}  # template -> replies as the prompt asks, filled from the inputs
        self._completion: dict[tuple[str, str], float] = {}
        if tokenizer_file:
            if not Path(tokenizer_file).is_file():
                raise TokenizerFileError(f"RAD3D_TOKENIZER={tokenizer_file}: no such tokenizer file")
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise TokenizerFileError(
                    f"RAD3D_TOKENIZER={tokenizer_file}: the 'tokenizers' package is not installed"
                ) from None
            try:
                self._tokenizer = Tokenizer.from_file(tokenizer_file)
            except Exception as exc:  # the package's own parse error of a file that is not a tokenizer.json
                message = " ".join(str(exc).split())[:200]
                raise TokenizerFileError(
                    f"RAD3D_TOKENIZER={tokenizer_file}: not a tokenizer.json ({message})"
                ) from None
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()

    def scale(self, model: str) -> float:
        """The endpoint's tokens per rule token: the model's own, else the whole cache's, else 1 (no usage)."""
        if model in self.usage.scale:
            return self.usage.scale[model]
        return self.usage.overall_scale or 1.0

    def rule(self, model: str) -> str:
        if self._tokenizer is not None:
            return f"tokenizer {self.tokenizer_file}"
        base = f"{DEFAULT_CHARS_PER_TOKEN} letters/token + 1 per run of digits and symbols"
        if model in self.usage.scale:
            return f"{base}, x{self.scale(model):.3f} (calibrated on this model's cached replies)"
        if self.usage.overall_scale:
            return f"{base}, x{self.scale(model):.3f} (calibrated on every cached reply)"
        return f"{base} (default: the cache has no usage figures)"

    def text(self, model: str, text: str) -> float:
        """Tokens of one text (a reply)."""
        if self._tokenizer is not None:
            return float(len(self._tokenizer.encode(text, add_special_tokens=False).ids))
        return rule_tokens(text) * self.scale(model)

    def count(self, model: str, messages: Sequence[dict[str, Any]]) -> float:
        if self._tokenizer is not None:
            texts = [message_text(m) for m in messages]
            encoded = self._tokenizer.encode_batch(texts, add_special_tokens=False)
            return float(sum(len(e.ids) for e in encoded) + MESSAGE_OVERHEAD * len(messages) + REPLY_OVERHEAD)
        return rule_prompt_tokens(messages) * self.scale(model)

    def completion(self, template: str, model: str) -> float:
        """Completion tokens of one reply: the mean of the template's cached replies, else the tokens of the
        reply the prompt asks for (its desired format or example, filled from the inputs when the planner
        set ``expected``)."""
        if template in self.usage.completion_mean:
            return self.usage.completion_mean[template]
        key = (template, model)
        if key not in self._completion:
            texts = self.expected.get(template) or reply_examples(template)
            self._completion[key] = sum(self.text(model, t) for t in texts) / len(texts)
        return self._completion[key]


def answer_word_limit(template: str) -> int | None:
    """The answer length a prompt allows ("using no more than 3 words"), if it says."""
    found = re.search(r"no more than (\d+) words", load_template(template).user)
    return int(found.group(1)) if found else None


def _as_long_as_allowed(answer: str, question: str, words: int | None) -> str:
    """An expected answer as long as the prompt allows (models use it: the 3D-RAD release's Task 1-2 answers
    average 19 characters, about 3 words), from the rules answer, then the words of its question."""
    if words is None:
        return answer
    have = answer.split()
    return " ".join(have + [w for w in question.rstrip("?").split() if w not in have][: max(0, words - len(have))])


def reply_examples(template: str) -> list[str]:
    """The reply a prompt asks for, as the prompt itself shows it: its desired format, its example response, or
    its example JSON lines (one text per example)."""
    try:
        user = load_template(template).user
    except FileNotFoundError:
        return [""]
    for marker in ("Desired format:", "Example response format:", "for example:"):
        if marker in user:
            tail = user.split(marker, 1)[1].strip()
            if marker == "for example:":
                return [line.strip() for line in tail.splitlines() if line.strip().startswith("{")] or [tail]
            return [tail]
    return [""]


# --------------------------------------------------------------------------- the plan's figures


@dataclass
class Line:
    """One stage x backend x model of the plan."""

    stage: str
    backend: str
    model: str
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0
    requests: float = 0.0
    cached: float = 0.0
    shared: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    estimate: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return (
            self.prompt_tokens * self.price_prompt_per_1m + self.completion_tokens * self.price_completion_per_1m
        ) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "requests": round(self.requests),
            "cached": round(self.cached),
            "shared_with_earlier_stage": round(self.shared),
            "prompt_tokens": round(self.prompt_tokens),
            "completion_tokens": round(self.completion_tokens),
            "cost_usd": round(self.cost_usd, 6),
            "cost_usd_batch": round(self.cost_usd * BATCH_DISCOUNT, 6),
            "estimate": self.estimate,
            "notes": list(dict.fromkeys(self.notes)),
        }


@dataclass
class Recorder:
    """The plan's request ledger: which stage sends each key first, and each line's figures."""

    counter: TokenCounter
    lines: dict[tuple[str, str, str], Line] = field(default_factory=dict)
    sender: dict[str, str] = field(default_factory=dict)  # request key (the attempt to send) -> stage
    cached_keys: dict[str, set[str]] = field(default_factory=dict)  # stage -> first keys found cached
    by_stage_keys: dict[str, set[str]] = field(default_factory=dict)  # stage -> keys it sends or shares

    def line(self, stage: str, backend: str, endpoint: EndpointConfig | None, model: str = "") -> Line:
        name = endpoint.model if endpoint is not None else model
        key = (stage, backend, name)
        if key not in self.lines:
            self.lines[key] = Line(
                stage,
                backend,
                name,
                endpoint.price_prompt_per_1m if endpoint is not None else 0.0,
                endpoint.price_completion_per_1m if endpoint is not None else 0.0,
            )
        return self.lines[key]

    def cached(self, stage: str, endpoint: EndpointConfig, first_key: str) -> None:
        seen = self.cached_keys.setdefault(stage, set())
        if first_key not in seen:
            seen.add(first_key)
            self.line(stage, "openai", endpoint).cached += 1

    def to_send(
        self, stage: str, endpoint: EndpointConfig, key: str, messages: list[dict[str, Any]], template: str
    ) -> bool:
        """Record a request to send; False when this stage already counted it."""
        mine = self.by_stage_keys.setdefault(stage, set())
        if key in mine:
            return False
        mine.add(key)
        line = self.line(stage, "openai", endpoint)
        if key in self.sender:
            line.shared += 1
            return True
        self.sender[key] = stage
        line.requests += 1
        line.prompt_tokens += self.counter.count(endpoint.model, messages)
        line.completion_tokens += self.counter.completion(template, endpoint.model)
        return True


class PlanningClient(LlmClient):
    """A client that never sends: it answers from the cache and records what the build would send."""

    def __init__(self, endpoint: EndpointConfig, cache: ResponseCache, recorder: Recorder, stage: str) -> None:
        super().__init__(replace(endpoint, batch=False), cache)
        self.recorder = recorder
        self.stage = stage
        self.config = endpoint
        self.new_requests = 0  # requests newly recorded as to send (or shared) by this client
        self.cached_hits = 0  # requests answered by the cache

    async def complete_parsed(
        self, messages: list[dict[str, Any]], parse: Callable[[str], T], *, template_version: str
    ) -> Outcome[T]:
        name = template_name(template_version)
        params = self.endpoint.sampling_params(name)
        model = self.endpoint.model
        first_key = request_key(model, messages, params, template_version, 0)
        attempt = 0
        while True:
            key = first_key if attempt == 0 else request_key(model, messages, params, template_version, attempt)
            got = self.cache.get(key)
            if got is None:
                if self.recorder.to_send(self.stage, self.config, key, messages, name):
                    self.new_requests += 1
                return Outcome(None, first_key, error="not cached: the build sends it", error_kind=NOT_CACHED)
            if got.finish_reason != "length":
                try:
                    value = parse(got.text)
                except ParseError:
                    pass
                else:
                    self.recorder.cached(self.stage, self.config, first_key)
                    self.cached_hits += 1
                    return Outcome(value, first_key)
            attempt += 1


# --------------------------------------------------------------------------- inputs and settings


@dataclass(frozen=True)
class PlanConfig:
    backend: str  # openai | rules (resolved)
    generator: EndpointConfig
    scorer: EndpointConfig
    spatial: EndpointConfig
    judges: tuple[tuple[str, EndpointConfig], ...] = ()  # LLM judges (the offline ones make no request)
    offline_judges: tuple[str, ...] = ()
    task3_stage1: str = "sentences"
    seed: int = 0
    n_shards: int = 16
    consistency_sample: int = 600
    curation: CurationSettings = field(default_factory=CurationSettings)
    tokenizer: str | None = None


@dataclass
class PlanInputs:
    """What the selected stages would read. A run is (tasks, shards) of one qa_candidates/qa_scores run."""

    reports: pd.DataFrame
    sentences: pd.DataFrame
    generation_runs: list[tuple[set[int], set[str]]] = field(default_factory=list)
    scoring_runs: list[tuple[set[int], set[str]]] = field(default_factory=list)
    consistency: bool = False
    spatial: bool = False
    candidates_table: pd.DataFrame | None = None  # qa_candidates as built (every partition), if any
    scores_table: pd.DataFrame | None = None  # qa_scores as built, if any
    curated_table: pd.DataFrame | None = None  # curated_qa as built, when the plan does not rebuild it
    notes: list[str] = field(default_factory=list)


@dataclass
class LlmPlan:
    backend: str
    lines: list[Line]
    stages: list[str]
    token_rules: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def stage_dict(self, stage: str) -> dict[str, Any]:
        mine = [line for line in self.lines if line.stage == stage]
        rows = [line.as_dict() for line in mine]
        total = sum(line.cost_usd for line in mine)
        return {
            "requests": sum(r["requests"] for r in rows),
            "cached": sum(r["cached"] for r in rows),
            "shared_with_earlier_stage": sum(r["shared_with_earlier_stage"] for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "cost_usd": round(total, 6),
            "cost_usd_batch": round(total * BATCH_DISCOUNT, 6),
            "estimate": any(line.estimate for line in mine),
            "by_model": rows,
        }

    def as_dict(self) -> dict[str, Any]:
        stages = {stage: self.stage_dict(stage) for stage in self.stages}
        total = sum(line.cost_usd for line in self.lines)
        return {
            "backend": self.backend,
            "stages": stages,
            "total": {
                "requests": sum(s["requests"] for s in stages.values()),
                "cached": sum(s["cached"] for s in stages.values()),
                "prompt_tokens": sum(s["prompt_tokens"] for s in stages.values()),
                "completion_tokens": sum(s["completion_tokens"] for s in stages.values()),
                "cost_usd": round(total, 6),
                "cost_usd_batch": round(total * BATCH_DISCOUNT, 6),
                "estimate": any(s["estimate"] for s in stages.values()),
            },
            "token_counting": self.token_rules,
            "batch_discount": BATCH_DISCOUNT,
            "notes": self.notes,
        }

    def table(self) -> str:
        """The plan as a text table (one line per stage x model, then the total)."""
        head = (
            f"{'stage':<20} {'backend/model':<28} {'to send':>9} {'cached':>8} {'prompt tok':>11} "
            f"{'compl tok':>10} {'cost USD':>10} {'batch USD':>10}"
        )
        out = [head, "-" * len(head)]
        for stage in self.stages:
            mine = [line for line in self.lines if line.stage == stage]
            if not mine:
                out.append(f"{stage:<20} {'(no LLM request)':<28}")
            for line in mine:
                d = line.as_dict()
                mark = "~" if line.estimate else ""
                sent = f"{mark}{d['requests']:,}"
                shared = f" (+{d['shared_with_earlier_stage']} shared)" if d["shared_with_earlier_stage"] else ""
                out.append(
                    f"{stage:<20} {(line.backend + '/' + line.model)[:28]:<28} {sent:>9} {d['cached']:>8,} "
                    f"{mark + format(d['prompt_tokens'], ','):>11} {mark + format(d['completion_tokens'], ','):>10} "
                    f"{d['cost_usd']:>10.4f} {d['cost_usd_batch']:>10.4f}{shared}"
                )
        total = self.as_dict()["total"]
        out.append("-" * len(head))
        out.append(
            f"{'total':<20} {'':<28} {total['requests']:>9,} {total['cached']:>8,} {total['prompt_tokens']:>11,} "
            f"{total['completion_tokens']:>10,} {total['cost_usd']:>10.4f} {total['cost_usd_batch']:>10.4f}"
        )
        if any(line.estimate for line in self.lines):
            out.append("~ = ESTIMATE: depends on LLM replies not cached yet (see docs/plan.md)")
        for model, rule in self.token_rules.items():
            out.append(f"tokens of {model}: {rule}")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


# --------------------------------------------------------------------------- the planner


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    if frame.empty:
        return set()
    return set(zip(frame["question"].astype(str), frame["answer"].astype(str), strict=True))


def _shards(frame: pd.DataFrame, n_shards: int) -> pd.Series:
    if frame.empty:
        return pd.Series([], dtype="object")
    return shard_column(frame["patient_id"].astype(str), n_shards)


def _in_partitions(frame: pd.DataFrame, parts: set[tuple[int, str]], n_shards: int) -> pd.DataFrame:
    if frame.empty or not parts:
        return frame.iloc[0:0]
    keys = list(zip(frame["task"].astype(int), _shards(frame, n_shards), strict=True))
    return frame.loc[[k in parts for k in keys]].reset_index(drop=True)


@dataclass
class _Estimate:
    """Candidates not known yet (their generation request is not cached), per (task, shard)."""

    pairs: dict[tuple[int, str], float] = field(default_factory=dict)
    rows: dict[tuple[int, str], float] = field(default_factory=dict)

    def add(self, part: tuple[int, str], pairs: float, rows: float) -> None:
        self.pairs[part] = self.pairs.get(part, 0.0) + pairs
        self.rows[part] = self.rows.get(part, 0.0) + rows

    def total_pairs(self, parts: Iterable[tuple[int, str]] | None = None) -> float:
        return sum(v for k, v in self.pairs.items() if parts is None or k in set(parts))

    def total_rows(self) -> float:
        return sum(self.rows.values())


class Planner:
    def __init__(self, config: PlanConfig, cache: ResponseCache, inputs: PlanInputs) -> None:
        self.config = config
        self.cache = cache
        self.inputs = inputs
        self.counter = TokenCounter(cache_usage(cache.path), config.tokenizer)
        self.recorder = Recorder(self.counter)
        self.known = candidates_frame([])  # candidates of the planned partitions, from cached replies
        self.generated: set[tuple[int, str]] = set()  # partitions the plan generates
        self.estimate = _Estimate()
        self.scores = pd.DataFrame()  # scores from cached replies (planned scoring)
        self.scored: set[tuple[int, str]] = set()
        self.notes = list(inputs.notes)
        self._proxy_pairs: dict[int, list[tuple[str, str, str]]] = {}  # task -> rules (question, answer, subtask)
        self._pending: dict[int, set[str]] = {}  # task -> generation requests not cached (report keys, sentences)

    # the rules backend on the same inputs: the text of pairs not generated yet (their tokens, not their count)
    def _rules(self, reports: pd.DataFrame, sentences: pd.DataFrame, tasks: set[int]) -> None:
        starters = {str(v): starters_for(self.config.seed, str(v)) for v in reports["VolumeName"]}
        frame = candidates_frame(generate_rules(sentences, reports, starters, tasks))
        for task in sorted({int(t) for t in frame["task"]}):
            group = frame.loc[frame["task"].astype(int) == task]
            mine = self._proxy_pairs.setdefault(task, [])
            if len(mine) < 200:
                columns = [group[c].astype(str).tolist() for c in ("question", "answer", "subtask_name")]
                mine += sorted(set(zip(*columns, strict=True)))[: 200 - len(mine)]

    def _measured(self, sentences: pd.DataFrame) -> pd.DataFrame:
        return sentences.loc[sentences["has_measurement"].astype(bool) & (sentences["section"] == "findings")]

    def _expect_replies(self) -> None:
        """The replies the generation prompts ask for, filled from the inputs (their completion tokens)."""
        rules12 = [(q, a) for t in (1, 2) for q, a, _ in self._proxy_pairs.get(t, [])]
        if rules12:
            form = reply_examples("task12")[0]
            words = answer_word_limit("task12")
            slots = re.compile(r"<Starter\d> \.\.\.\? Answer: \.\.\.")
            texts = []
            for offset in range(0, min(len(rules12), 60), 6):
                pairs = iter(rules12[offset:] + rules12[:offset])

                def fill(_match: re.Match[str], it: Iterator[tuple[str, str]] = pairs) -> str:
                    question, answer = next(it)
                    return f"{question} Answer: {_as_long_as_allowed(answer, question, words)}"

                texts.append(slots.sub(fill, form))
            self.counter.expected["task12"] = texts
        rules3 = self._proxy_pairs.get(3, [])
        if rules3:
            self.counter.expected["task3_stage2"] = [f"{s}\nQuestion: {q} Answer: {a}" for q, a, s in rules3]
        measured = self._measured(self.inputs.sentences)
        if len(self.inputs.reports) and "Findings_EN" in self.inputs.reports:
            by_volume = measured.groupby("VolumeName")["text"].apply(list).to_dict() if len(measured) else {}
            found: dict[str, list[str]] = {}
            reports = self.inputs.reports
            for volume, findings in zip(reports["VolumeName"], reports["Findings_EN"], strict=True):
                found.setdefault(str(findings), by_volume.get(volume, []))
            self.counter.expected["task3_stage1"] = [
                "\n".join(f"{i}). Sentence-{i}: {s}" for i, s in enumerate(texts, 1))
                for texts in list(found.values())[:200]
            ]

    def plan_generation(self) -> None:
        cfg = self.config
        reports_all = self.inputs.reports
        shard_of_report = _shards(reports_all, cfg.n_shards)
        sample = reports_all.head(PROXY_REPORTS)
        tasks_all = {t for tasks, _ in self.inputs.generation_runs for t in tasks}
        self._rules(
            sample,
            self.inputs.sentences.loc[self.inputs.sentences["VolumeName"].isin(set(sample["VolumeName"]))],
            tasks_all,
        )
        self._expect_replies()
        for tasks, shards in self.inputs.generation_runs:
            run_reports = reports_all.loc[shard_of_report.isin(shards).to_numpy()].reset_index(drop=True)
            run_sentences = self.inputs.sentences.loc[
                self.inputs.sentences["VolumeName"].isin(set(run_reports["VolumeName"]))
            ]
            self.generated |= {(t, s) for t in tasks for s in shards}
            if run_reports.empty:
                continue
            measured_all = self._measured(run_sentences)
            per_findings = measured_all["text"].nunique() / max(1, run_reports["Findings_EN"].nunique())
            rows_per_sentence = len(measured_all) / max(1, measured_all["text"].nunique())
            run_shards = _shards(run_reports, cfg.n_shards)
            for shard in sorted(shards):
                reports = run_reports.loc[(run_shards == shard).to_numpy()].reset_index(drop=True)
                if reports.empty:
                    continue
                sentences = run_sentences.loc[run_sentences["VolumeName"].isin(set(reports["VolumeName"]))]
                if tasks & {1, 2}:
                    client = PlanningClient(cfg.generator, self.cache, self.recorder, "qa_candidates")
                    result = generate_task12(client, reports, tasks, cfg.seed)
                    self._add_known(result.candidates)
                    self._estimate_task12(tasks, shard, reports, result.candidates)
                if 3 in tasks:
                    client = PlanningClient(cfg.generator, self.cache, self.recorder, "qa_candidates")
                    if cfg.task3_stage1 == "llm":
                        measured, _ = stage1_sentences_llm(client, reports)
                        unknown = client.new_requests  # stage-1 requests not cached: their sentences are not known
                        if unknown:
                            extra = unknown * per_findings
                            line = self.recorder.line("qa_candidates", "openai", cfg.generator)
                            line.requests += extra
                            line.prompt_tokens += extra * self._proxy_tokens("task3_stage2", cfg.generator.model)
                            line.completion_tokens += extra * self.counter.completion(
                                "task3_stage2", cfg.generator.model
                            )
                            line.estimate = True
                            line.notes.append(
                                "Task 3 stage-2 requests of stage-1 replies not cached yet: estimated from the "
                                "measurement sentences of report_sentences"
                            )
                            share = self._distinct_share(3)
                            self.estimate.add((3, shard), extra * PAIRS_PER_SENTENCE * share, extra * rows_per_sentence)
                    else:
                        measured = self._measured(sentences)
                    result = generate_task3(client, measured, reports)
                    self._add_known(result.candidates)
                    self._estimate_task3(shard, measured, result.candidates)
        self._apply_distinct_shares()
        if self.inputs.generation_runs:
            self.recorder.line("qa_candidates", "openai", cfg.generator)

    def _estimate_task12(self, tasks: set[int], shard: str, reports: pd.DataFrame, known: list[Any]) -> None:
        """Pairs of report requests not cached, as Figure 11 asks: six per report (two of Task 1, four of
        Task 2), on every volume of the report; each not-cached report counted once over all shards."""
        answered = {str(c.volume_name) for c in known}
        pending = reports.loc[~reports["VolumeName"].astype(str).isin(answered)]
        if pending.empty:
            return
        keys = {
            report_key(str(f), str(i)) for f, i in zip(pending["Findings_EN"], pending["Impressions_EN"], strict=True)
        }
        for task in sorted(tasks & set(PAIRS_PER_REPORT)):
            seen = self._pending.setdefault(task, set())
            fresh = keys - seen
            seen |= keys
            self.estimate.add((task, shard), len(fresh) * PAIRS_PER_REPORT[task], len(pending) * PAIRS_PER_REPORT[task])

    def _estimate_task3(self, shard: str, measured: pd.DataFrame, known: list[Any]) -> None:
        """Pairs of sentence requests not cached, as Figure 13 asks: one per distinct sentence, on every row."""
        answered = {str(c.source_text) for c in known if c.task == 3}
        pending = measured.loc[~measured["text"].astype(str).isin(answered)]
        if pending.empty:
            return
        texts = set(pending["text"].astype(str))
        seen = self._pending.setdefault(3, set())
        fresh = texts - seen
        seen |= texts
        self.estimate.add((3, shard), len(fresh) * PAIRS_PER_SENTENCE, len(pending) * PAIRS_PER_SENTENCE)

    def _distinct_share(self, task: int) -> float:
        """Distinct pairs per pair of different requests: measured on the cached replies of this plan, else the
        default."""
        known = self.known.loc[self.known["task"] == task] if len(self.known) else self.known
        if len(known) and known["request_key"].nunique() >= MIN_HISTORY:
            units = known[["request_key", "question", "answer"]].drop_duplicates()
            return len(units[["question", "answer"]].drop_duplicates()) / len(units)
        return DEFAULT_DISTINCT_SHARE

    def _apply_distinct_shares(self) -> None:
        for task in sorted({t for t, _ in self.estimate.pairs}):
            share = self._distinct_share(task)
            for part in [p for p in self.estimate.pairs if p[0] == task]:
                self.estimate.pairs[part] *= share
            source = "measured on the cached replies" if share != DEFAULT_DISTINCT_SHARE else "default"
            self.notes.append(
                f"Task {task}: candidates of generation requests not cached yet: the pairs the prompt asks for, "
                f"{share:.3f} of them distinct ({source})"
            )

    def _add_known(self, candidates: list[Any]) -> None:
        frame = candidates_frame(candidates)
        self.known = pd.concat([self.known, frame], ignore_index=True).drop_duplicates("qa_id").reset_index(drop=True)

    def all_candidates(self) -> pd.DataFrame:
        """Candidates as the downstream stages read them: planned partitions from the plan, others as built."""
        table = self.inputs.candidates_table
        if table is None or table.empty:
            return self.known
        keys = list(zip(table["task"].astype(int), _shards(table, self.config.n_shards), strict=True))
        others = table.loc[[k not in self.generated for k in keys]]
        return pd.concat([self.known, others], ignore_index=True).drop_duplicates("qa_id").reset_index(drop=True)

    def _proxy_tokens(self, template: str, model: str) -> float:
        """Mean prompt tokens of the template rendered with the rules backend's pairs (estimated requests)."""
        t = load_template(template)
        pairs = [(q, a) for task in sorted(self._proxy_pairs) for q, a, _ in self._proxy_pairs[task]]
        pairs = pairs or [("What is seen?", "Nothing")]
        if template in ("scoring", "spatial_judge"):
            counts = [self.counter.count(model, t.messages(Question=q, Answer=a)) for q, a in pairs]
        elif template == "task3_stage2":
            texts = self._measured(self.inputs.sentences)["text"].astype(str).head(200).tolist() or ["5 mm"]
            counts = [self.counter.count(model, t.messages(Sentence=s)) for s in texts]
        else:
            counts = [self.counter.count(model, t.messages())]
        return sum(counts) / len(counts)

    def _add_estimated(
        self, stage: str, endpoint: EndpointConfig, template: str, requests: float, cached: float = 0.0
    ) -> None:
        line = self.recorder.line(stage, "openai", endpoint)
        line.estimate = True
        if requests > 0:
            line.requests += requests
            line.prompt_tokens += requests * self._proxy_tokens(template, endpoint.model)
            line.completion_tokens += requests * self.counter.completion(template, endpoint.model)
        line.cached += cached

    def plan_scoring(self) -> None:
        cfg = self.config
        candidates = self.all_candidates()
        frames = []
        for tasks, shards in self.inputs.scoring_runs:
            parts = {(t, s) for t in tasks for s in shards}
            self.scored |= parts
            run = _in_partitions(candidates, parts, cfg.n_shards)
            client = PlanningClient(cfg.scorer, self.cache, self.recorder, "qa_scores")
            self.recorder.line("qa_scores", "openai", cfg.scorer)
            if len(run):
                scores, _ = score_candidates(client, run)
                frames.append(scores)
            extra = self.estimate.total_pairs(parts)
            if extra > 0:
                self._add_estimated("qa_scores", cfg.scorer, "scoring", extra)
        self.scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _sample_scale(self, candidates: pd.DataFrame) -> float:
        rows = len(candidates) + self.estimate.total_rows()
        return min(1.0, self.config.consistency_sample / rows) if rows > 0 else 0.0

    def plan_consistency(self) -> None:
        cfg = self.config
        candidates = self.all_candidates()
        if not cfg.judges:
            for name in cfg.offline_judges:
                self.recorder.line("scoring_consistency", "offline", None, name)
            if not cfg.offline_judges:
                self.notes.append("scoring_consistency: no judges configured (RAD3D_JUDGES): no request")
            return
        extra_pairs = self.estimate.total_pairs()
        for name, endpoint in cfg.judges:
            if extra_pairs <= 0:
                if candidates.empty:
                    self.recorder.line("scoring_consistency", "openai", endpoint)
                    continue
                sample = sample_for_consistency(candidates, cfg.consistency_sample, cfg.seed)
                score_candidates(PlanningClient(endpoint, self.cache, self.recorder, "scoring_consistency"), sample)
                continue
            # Candidates not all known: the known ones' cache state, scaled to the sample.
            scratch = Recorder(self.counter, sender=dict(self.recorder.sender))
            if len(candidates):
                score_candidates(PlanningClient(endpoint, self.cache, scratch, "scoring_consistency"), candidates)
            known = scratch.line("scoring_consistency", "openai", endpoint)
            scale = self._sample_scale(candidates)
            line = self.recorder.line("scoring_consistency", "openai", endpoint)
            line.requests += known.requests * scale
            line.shared += known.shared * scale
            line.prompt_tokens += known.prompt_tokens * scale
            line.completion_tokens += known.completion_tokens * scale
            if self._asks_like_the_scorer(endpoint):  # the scorer sends these first: the judge finds them cached
                line.estimate = True
                line.shared += extra_pairs * scale
                line.cached += known.cached * scale
                line.notes.append(f"judge {name} is the scorer model: its requests are the scorer's")
            else:
                self._add_estimated(
                    "scoring_consistency", endpoint, "scoring", extra_pairs * scale, known.cached * scale
                )
            line.notes.append(f"judge {name}: the sample's share of the candidates, {scale:.3f}, of their pairs")

    def _asks_like_the_scorer(self, endpoint: EndpointConfig) -> bool:
        """Whether a judge's scoring requests have the scorer's cache keys, and the plan scores first."""
        scorer = self.config.scorer
        return (
            bool(self.inputs.scoring_runs)
            and endpoint.model == scorer.model
            and endpoint.sampling_params("scoring") == scorer.sampling_params("scoring")
        )

    def plan_spatial(self) -> None:
        cfg = self.config
        endpoint = cfg.spatial
        self.recorder.line("spatial_qa", "openai", endpoint)
        curated = self.inputs.curated_table
        if curated is not None:
            pairs = sorted(_pairs(curated.rename(columns={"Question": "question", "Answer": "answer"})))
            self._spatial_requests(endpoint, pairs)
            return
        candidates = self.all_candidates()
        scores = self._all_scores(candidates)
        unscored = len(candidates) - len(scores)
        extra = self.estimate.total_pairs()
        if candidates.empty and extra <= 0:
            return
        known = candidates.loc[candidates["qa_id"].isin(set(scores["qa_id"]))] if len(scores) else candidates.iloc[0:0]
        kept = curate(known, scores, cfg.curation) if len(known) else known
        if unscored <= 0 and extra <= 0:
            self._spatial_requests(endpoint, sorted(_pairs(kept)))
            return
        share, source = self._keep_share(known, kept)
        # Kept pairs of scored candidates count in full; the pairs of candidates not scored yet count at the
        # keep share (with their own cache state); candidates not generated yet, at the keep share too.
        unscored_pairs = _pairs(candidates.loc[~candidates["qa_id"].isin(set(scores["qa_id"]))]) - _pairs(known)
        line = self.recorder.line("spatial_qa", "openai", endpoint)
        for group, scale in ((_pairs(kept), 1.0), (unscored_pairs, share)):
            scratch = Recorder(self.counter, sender=dict(self.recorder.sender))
            self._spatial_requests(endpoint, sorted(group), scratch)
            part = scratch.line("spatial_qa", "openai", endpoint)
            line.requests += part.requests * scale
            line.cached += part.cached * scale
            line.shared += part.shared * scale
            line.prompt_tokens += part.prompt_tokens * scale
            line.completion_tokens += part.completion_tokens * scale
        self._add_estimated("spatial_qa", endpoint, "spatial_judge", extra * share)
        self.recorder.line("spatial_qa", "openai", endpoint).notes.append(
            f"curated pairs estimated: {share:.2f} of the candidates' pairs kept ({source})"
        )

    def _keep_share(self, known: pd.DataFrame, kept: pd.DataFrame) -> tuple[float, str]:
        """The share of scored pairs the curation keeps: on this plan's scored candidates, else on the cached
        scoring replies (the scorer's own, else every model's), else the default."""
        if len(known) >= MIN_HISTORY:
            return len(_pairs(kept)) / len(_pairs(known)), "measured on the cached scores of these candidates"
        history = self.counter.usage.scores
        scorer = self.config.scorer.model
        scores = history.get(scorer) or [s for model in sorted(history) for s in history[model]]
        if len(scores) >= MIN_HISTORY:
            frame = pd.DataFrame(scores, columns=list(SCORE_DIMENSIONS))
            frame["mean"] = frame.mean(axis=1)
            whose = "the scorer's" if history.get(scorer) else "every model's"
            passed = float(passes_filter(frame, self.config.curation).mean())
            return passed, f"the curation filter on {len(scores)} cached scoring replies ({whose})"
        return DEFAULT_KEEP_SHARE, "default"

    def _all_scores(self, candidates: pd.DataFrame) -> pd.DataFrame:
        frames = [self.scores] if len(self.scores) else []
        table = self.inputs.scores_table
        if table is not None and len(table):
            replanned = _in_partitions(candidates, self.scored, self.config.n_shards)["qa_id"]
            frames.append(table.loc[~table["qa_id"].isin(set(replanned))])
        if not frames:
            return pd.DataFrame(columns=["qa_id"])
        scores = pd.concat(frames, ignore_index=True).drop_duplicates("qa_id")
        return scores.loc[scores["qa_id"].isin(set(candidates["qa_id"]))].reset_index(drop=True)

    def _spatial_requests(
        self, endpoint: EndpointConfig, pairs: list[tuple[str, str]], recorder: Recorder | None = None
    ) -> None:
        """The spatial judge's requests: the build's own (``quality_stage.spatial_jobs``)."""
        from rad3d_pipeline.quality.stage import spatial_jobs

        client = PlanningClient(endpoint, self.cache, recorder or self.recorder, "spatial_qa")
        run_all(spatial_jobs(client, pairs), [client])

    def run(self, stages: Sequence[str]) -> LlmPlan:
        cfg = self.config
        if cfg.backend != "openai":
            for stage in stages:
                self.recorder.line(stage, "rules", None, RULES_MODEL)
            return LlmPlan(
                cfg.backend,
                list(self.recorder.lines.values()),
                list(stages),
                {},
                [
                    *self.notes,
                    "the rules backend sends no LLM request"
                    + ("; the LLM judges of scoring_consistency are not planned with it" if cfg.judges else ""),
                ],
            )
        if "qa_candidates" in stages:
            self.plan_generation()
        if "qa_scores" in stages:
            self.plan_scoring()
        if "scoring_consistency" in stages:
            self.plan_consistency()
        if "spatial_qa" in stages:
            self.plan_spatial()
        models = sorted({line.model for line in self.recorder.lines.values() if line.backend == "openai"})
        rules = {m: self.counter.rule(m) for m in models}
        return LlmPlan(cfg.backend, list(self.recorder.lines.values()), list(stages), rules, self.notes)


def plan_llm(config: PlanConfig, cache: ResponseCache, inputs: PlanInputs, stages: Sequence[str]) -> LlmPlan:
    """The plan of the given LLM stages (in build order); sends nothing."""
    ordered = [s for s in STAGES if s in stages]
    return Planner(config, cache, inputs).run(ordered)


def write_plan(plan: LlmPlan, path: Path) -> Path:
    """``plan.json`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan.as_dict(), indent=2) + "\n")
    tmp.replace(path)
    return path
