"""LLM-jury accuracy: several judges decide whether a prediction answers the question correctly; majority vote.

The companion benchmark asks one LLM (Gemini) whether each prediction is clinically correct
given the reference answer, allowing medical synonyms. Here several judges do it through the
project's LLM layer (cache, retries, rejects, accounting) and the majority decides; a tie or no
verdict at all counts as incorrect. Each judge is a :class:`rad3d_pipeline.llm.client.LlmClient`.

Offline (no endpoint), the ``offline-rules`` judge stands in, labelled as such: correct when the
prediction matches the reference after normalisation, chooses the right letter, or contains
every content word of a short reference. It is deterministic and is not an LLM.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.evaluation.closed_choice import parse_choice
from rad3d_pipeline.evaluation.text_metrics import normalize_answer
from rad3d_pipeline.llm.client import Accounting, LlmClient, Outcome, run_all
from rad3d_pipeline.llm.parsers import ParseError, clean_reply

JURY_TEMPLATE_VERSION = "jury-1"
OFFLINE_JUDGE = "offline-rules"
SYSTEM_PROMPT = (
    "You are an expert radiologist grading answers to questions about chest CT scans. Decide whether the "
    "model's answer is correct given the reference answer. Accept medical synonyms, paraphrases and "
    "equivalent units; reject answers that contradict the reference, are vaguer than the question requires "
    "or hedge between options. Reply with exactly one word: CORRECT or INCORRECT."
)
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT|WRONG|RIGHT|YES|NO)\b", re.IGNORECASE)
_STOPWORDS = frozenset(
    (
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "of",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "with",
        "no",
        "not",
        "there",
        "this",
        "that",
        "it",
        "its",
        "as",
        "by",
        "for",
        "from",
        "seen",
        "noted",
        "present",
        "observed",
    )
)


def jury_messages(question: str, reference: str, prediction: str) -> list[dict[str, str]]:
    user = f"Question: {question}\nReference answer: {reference}\nModel answer: {prediction}\nVerdict:"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> bool:
    """CORRECT/INCORRECT (also right/wrong, yes/no) from a judge's reply; the first verdict word wins."""
    match = _VERDICT.search(clean_reply(text))
    if match is None:
        raise ParseError(f"no CORRECT/INCORRECT verdict in {text[:80]!r}")
    return match.group(1).upper() in {"CORRECT", "RIGHT", "YES"}


def offline_verdict(question: str, reference: str, prediction: str, answer_letter: str = "") -> bool:
    """The deterministic offline judge (not an LLM)."""
    said, ref = normalize_answer(prediction), normalize_answer(reference)
    if not said:
        return False
    if said == ref:
        return True
    if answer_letter:
        return parse_choice(prediction) == answer_letter
    words = [w for w in ref.split() if w not in _STOPWORDS]
    negated_ref = bool({"no", "not", "without", "absent"} & set(ref.split()))
    negated_said = bool({"no", "not", "without", "absent"} & set(said.split()))
    return bool(words) and len(words) <= 8 and set(words) <= set(said.split()) and negated_ref == negated_said


def majority(verdicts: Sequence[bool | None]) -> bool:
    """Majority of the verdicts given (None = the judge gave none); a tie is incorrect, and so is a row
    no judge gave a verdict on (an unreachable endpoint must not raise the accuracy by dropping rows)."""
    given = [v for v in verdicts if v is not None]
    return bool(given) and sum(given) * 2 > len(given)


@dataclass
class Jury:
    """Judges by name: LLM clients, or the offline judge (``clients`` empty or holding ``OFFLINE_JUDGE``)."""

    clients: dict[str, LlmClient | None]  # name -> client; None for the offline judge
    accounting: Accounting = field(default_factory=Accounting)
    verdicts: pd.DataFrame | None = None  # per row and judge, after a call

    @property
    def label(self) -> str:
        names = ", ".join(self.clients)
        if all(client is None for client in self.clients.values()):
            return f"{names} (deterministic offline judge, not an LLM)"
        return f"majority of {len(self.clients)}: {names}"

    def __call__(self, frame: pd.DataFrame) -> list[bool | None]:
        """One majority verdict per row of a predictions frame (Question, Answer, prediction[, AnswerChoice])."""
        questions = frame["Question"].astype(str).tolist()
        refs = frame["Answer"].astype(str).tolist()
        preds = frame["prediction"].fillna("").astype(str).tolist()
        closed = (frame["QuestionType"].astype(str) == "Close").tolist() if "QuestionType" in frame else []
        letters = frame["AnswerChoice"].astype(str).tolist() if "AnswerChoice" in frame else [""] * len(frame)
        letters = [letter if closed and closed[i] else "" for i, letter in enumerate(letters)]
        triples = list(dict.fromkeys(zip(questions, refs, preds, letters, strict=True)))
        by_judge: dict[str, dict[tuple[str, str, str, str], bool | None]] = {}
        for name, client in self.clients.items():
            if client is None:
                by_judge[name] = {t: offline_verdict(*t) for t in triples}
                continue
            jobs = [
                (
                    lambda t=t, c=client: c.complete_parsed(
                        jury_messages(t[0], t[1], t[2]), parse_verdict, template_version=JURY_TEMPLATE_VERSION
                    )
                )
                for t in triples
                if t[2].strip()
            ]
            asked = [t for t in triples if t[2].strip()]
            outcomes: list[Outcome[bool]] = run_all(jobs, [client])
            self.accounting.add(client.accounting)
            if client.fatal:  # the judge's endpoint refused everything: no verdicts, so no number
                raise LlmStageError(f"LLM jury, judge {name}: {client.fatal}")
            verdicts: dict[tuple[str, str, str, str], bool | None] = dict.fromkeys(triples, False)
            verdicts.update({t: o.value for t, o in zip(asked, outcomes, strict=True)})
            by_judge[name] = verdicts
        keys = list(zip(questions, refs, preds, letters, strict=True))
        self.verdicts = pd.DataFrame({name: [v[k] for k in keys] for name, v in by_judge.items()}, index=frame.index)
        return [majority([by_judge[name][k] for name in by_judge]) for k in keys]
