"""A local OpenAI-compatible chat-completions server for the tests (loopback only).

Replies are scripted from the prompt itself, so a run against it is deterministic. Three reply
formats (``reply_format``): ``scripted`` (the historical mix: the paper's text formats for Tasks
1-3, JSON for scoring and the spatial judge), ``json`` (the JSON of ``rad3d_pipeline.llm.schemas``
for every prompt) and ``paper`` (that JSON rendered into the paper's own formats, with the usual
drift, by ``tests.paper_formats.to_paper_format``; the rendering is seeded by the prompt).

Fault injection, each at a rate, decided by a seeded generator per request: 429 with Retry-After
(seconds, ``date`` for an HTTP date, or anything else verbatim such as ``soon``), 500, slow replies
(client timeouts), malformed replies, and the 200s that carry no answer: an HTML page from a proxy,
a body that is not JSON, a JSON body cut off, an ``error`` object, no ``choices``, an empty
``content``; a connection reset mid-body; a reply cut at ``finish_reason: length``. A permanent
failure rate makes some prompts (chosen by their hash) always fail. ``api_key`` and
``known_models`` make it answer 401 and 404 (model not found) as hosted APIs do. Counts requests,
the injected faults by kind, the prompts per template, and the largest number in flight.

Usage figures are counted as an OpenAI-style tokenizer would, roughly (:func:`count_tokens`: about 4
characters per token on English): each run of letters is one token per started 5 letters, each group
of up to 3 digits one token, each run of other non-space characters one token; a prompt adds 3 tokens
per message and 3 for the reply (OpenAI's chat format). ``token_counter`` replaces the rule (e.g. a
real tokenizer). The prompt tokens of each distinct prompt are kept in ``prompt_tokens_by_digest``, the
completion tokens of its (last) reply in ``completion_tokens_by_digest``.

``model_like=True`` answers as a real model does with respect to counts (what ``rad3d build --plan``
estimates; the default, scripted replies repeat pairs far more than a model does). As the paper's
Figure 11 asks: exactly six pairs per report, each drawn from one sentence of the report (a normal
statement for the anatomy, the abnormal ones for the pathology aspects, the Impressions for the
sixth; which one depends on the whole report) and naming what that sentence names, so pairs of
different reports differ unless their sentences and choices do (in the 3D-RAD release, 240 of the
244 (question, answer) pairs of distinct scans of the fixture's 50 patients are distinct). Figure
13's one pair per sentence names the lesion ("a specific descriptor or location"). Scores as a real
scorer gives pairs that follow the prompt (the JSON of the example alone): 4 or 5 on every
dimension, except for the share of flawed pairs the paper's human validation found (53 of 600
inconsistent with the report), which get a 2 on one dimension (the curation drops them).
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCORE_NAMES = (
    "Visual Verifiability",
    "Specificity & Clarity",
    "Answer Appropriateness",
    "Q-A Alignment",
    "Linguistic Quality",
)
LOCATION = re.compile(r"\b(right|left) (upper|middle|lower) lobe\b", re.IGNORECASE)
MEASURE = re.compile(r"(\d+(?:\.\d+)?(?:\s*[x×]\s*\d+(?:\.\d+)?)?)\s*(mm|cm)\b", re.IGNORECASE)
TOKEN_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]+")
MESSAGE_TOKENS = 3  # per message, and for the reply (OpenAI's chat format)


def count_tokens(text: str) -> int:
    """A BPE-like token count (about 4 characters per token on English, as OpenAI's tokenizers)."""
    return sum(-(-len(p) // 5) if p[0].isalpha() else 1 for p in TOKEN_PIECE.findall(text))


def _content(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def prompt_token_count(messages: list[dict[str, Any]], counter: Callable[[str], int] = count_tokens) -> int:
    return sum(counter(_content(m)) for m in messages) + MESSAGE_TOKENS * len(messages) + MESSAGE_TOKENS


TRANSIENT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "timeout",
    "html",
    "not_json",
    "cut_json",
    "error_body",
    "no_choices",
    "reset",
    "empty",
)
# the kind the client counts each injected fault as (rad3d_pipeline.llm.client.error_kind)
CLIENT_KIND: dict[str, str] = {
    "429": "HTTP 429",
    "500": "HTTP 500",
    "timeout": "timeout",
    "html": "HTML page",
    "not_json": "non-JSON body",
    "cut_json": "cut-off body",
    "error_body": "error object",
    "no_choices": "no choices",
    "reset": "connection error",
    "empty": "empty content",
}


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    rate_malformed: float = 0.0
    rate_html: float = 0.0  # a 200 text/html page from a proxy
    rate_not_json: float = 0.0  # a 200 application/json body that is not JSON
    rate_cut_json: float = 0.0  # a 200 JSON body cut off (Content-Length of the cut body)
    rate_error_body: float = 0.0  # a 200 {"error": {...}} without choices
    rate_no_choices: float = 0.0  # a 200 with "choices": []
    rate_reset: float = 0.0  # half the body, then a TCP reset
    rate_empty: float = 0.0  # content ""
    rate_length: float = 0.0  # half the reply, finish_reason "length" (a reject, not a transport fault)
    retry_after: str = "0.05"  # on 429: seconds, "date" (an HTTP date, now) or verbatim ("soon")
    retry_after_5xx: str | None = None  # the same on 500, when set
    timeout_sleep_s: float = 2.0
    permanent_rate: float = 0.0  # share of prompts (by hash) that always fail
    permanent_kind: str = "500"  # "500" or "malformed"
    seed: int = 0

    def transient(self, kind: str, rate: float) -> Faults:
        """A copy with one transient fault kind (of TRANSIENT_KINDS) at ``rate``."""
        name = {"429": "rate_429", "500": "rate_500", "timeout": "rate_timeout"}.get(kind, f"rate_{kind}")
        return Faults(**{**self.__dict__, name: rate})


@dataclass
class ServerState:
    faults: Faults = field(default_factory=Faults)
    latency_s: float = 0.0
    reply_format: str = "scripted"  # scripted | json | paper
    api_key: str | None = None  # when set, any other bearer token gets a 401
    known_models: set[str] | None = None  # when set, any other model gets a 404 (model not found)
    injected: Counter[str] = field(default_factory=Counter)  # faults injected, by kind
    prompts: list[tuple[str, str]] = field(default_factory=list)  # (template, prompt digest) per chat request
    permanent: dict[str, str] = field(default_factory=dict)  # prompt digest -> template, failed for good
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every chat request body
    requests: int = 0
    completed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    models: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_polls_before_done: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    token_counter: Callable[[str], int] = count_tokens  # usage figures (see the module docstring)
    prompt_tokens: int = 0  # usage reported in replies sent
    completion_tokens: int = 0
    prompt_tokens_by_digest: dict[str, int] = field(default_factory=dict)
    completion_tokens_by_digest: dict[str, int] = field(default_factory=dict)  # of the last reply to each prompt
    model_like: bool = False  # replies with a real model's counts (see the module docstring)


FLAWED_SHARE = 53 / 600  # pairs inconsistent with their report in the paper's human validation
NORMAL_STATEMENT = re.compile(r"\b(no|not|normal|open|unremarkable|within)\b", re.IGNORECASE)
ASPECT_NOUNS = ("structure", "finding", "abnormality", "feature", "location", "diagnosis")


def _scores(user: str, model: str, model_like: bool = False) -> dict[str, int]:
    question = re.search(r"Question: (.*)", user)
    answer = re.search(r"Answer: (.*)", user)
    text = f"{model}|{question.group(1) if question else ''}|{answer.group(1) if answer else ''}"
    digest = hashlib.sha256(text.encode()).digest()
    if not model_like:
        return {name: 2 + digest[i] % 4 for i, name in enumerate(SCORE_NAMES)}  # 2..5
    scores = {name: 4 + digest[i] % 2 for i, name in enumerate(SCORE_NAMES)}  # 4..5
    if int.from_bytes(digest[8:12], "big") / 2**32 < FLAWED_SHARE:
        scores[SCORE_NAMES[digest[12] % len(SCORE_NAMES)]] = 2
    return scores


def _score_reply(user: str, model: str, model_like: bool = False) -> str:
    if model_like:  # as the paper's scorer (GPT-4o-mini) answers the Figure 17 example format: the JSON alone
        return json.dumps(_scores(user, model, model_like), indent=2)
    return "<think>Checking the pair.</think>\n" + json.dumps(_scores(user, model), indent=2)


def _report_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[A-Za-z0-9])\.\s+", text.strip().rstrip(".")) if s.strip()]


def _model_like_task12_pairs(user: str) -> list[tuple[str, str]]:
    """Six pairs, each naming what one sentence of the report names (a model's specificity)."""
    findings = re.search(r"Findings: (.*)", user)
    impressions = re.search(r"Impressions: (.*)", user)
    starters = re.findall(r"Question-\d: (\w+) \.\.\.", user) or ["What"] * 6
    found = _report_sentences(findings.group(1) if findings else "") or ["No abnormality is seen"]
    # As the aspects ask: anatomy from a normal statement, the pathology aspects from the abnormal ones.
    normal = [s for s in found if NORMAL_STATEMENT.search(s)] or found
    abnormal = [s for s in found if not NORMAL_STATEMENT.search(s)] or found
    # Which statement a model picks depends on the whole report (its context), not on the sentence alone.
    choice = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16)
    picks = [normal[choice % len(normal)]] + [
        abnormal[(choice + i * len(abnormal) // 4) % len(abnormal)] for i in range(4)
    ]
    picks.append((_report_sentences(impressions.group(1) if impressions else "") or ["Normal study"])[0])
    pairs = []
    for starter, noun, sentence in zip(starters, ASPECT_NOUNS, picks, strict=True):
        words = re.findall(r"[A-Za-z]+", sentence)
        subject = " ".join(words[:4]).lower() or "chest"
        answer = " ".join(words[-3:]).capitalize() or "Normal"
        pairs.append((f"{starter} {noun} is seen in the {subject}?", answer))
    return pairs


def _task12_pairs(user: str, model_like: bool = False) -> list[tuple[str, str]]:
    if model_like:
        return _model_like_task12_pairs(user)
    findings = re.search(r"Findings: (.*)", user)
    text = findings.group(1) if findings else ""
    where = LOCATION.search(text)
    place = where.group(0).lower() if where else "right lower lobe"
    starters = re.findall(r"Question-\d: (\w+) \.\.\.", user) or ["What"] * 6
    words = [w for w in re.findall(r"[a-z]{6,}", text.lower())][:6] or ["normal"] * 6
    return [
        (f"{starters[0]} is the appearance of the trachea?", words[0 % len(words)].capitalize()),
        (f"{starters[1]} finding involves the {place}?", words[1 % len(words)].capitalize()),
        (f"{starters[2]} abnormality type is in the {place}?", "Nodule"),
        (f"{starters[3]} feature does the {place} lesion show?", words[2 % len(words)].capitalize()),
        (f"{starters[4]} is the lesion located?", place.capitalize()),
        (f"{starters[5]} diagnosis fits the {place}?", words[3 % len(words)].capitalize()),
    ]


def _task12_reply(user: str, model_like: bool = False) -> str:
    headings = [
        "1). Anatomical observation (based on Findings)",
        "2). Pathological observation (based on Findings)",
        "3). Abnormality type (based on Findings)",
        "4). Abnormality feature (based on Findings)",
        "5). Abnormality position (based on Findings)",
        "6). Abnormality or normality diagnosis (based on Impressions)",
    ]
    lines = []
    for i, (heading, (question, answer)) in enumerate(zip(headings, _task12_pairs(user, model_like), strict=True), 1):
        label = f"**Question-{i}:**" if i == 1 else f"Question-{i}:"
        lines += [heading, f"{label} {question} Answer: {answer}"]
    return "\n".join(lines)


def _stage1_sentences(user: str) -> list[str]:
    report = user.split("Radiology finding report:")[-1].split("Desired format:")[0]
    return [s.strip() for s in re.split(r"(?<=[a-z])\.\s+", report) if MEASURE.search(s)]


def _stage1_reply(user: str) -> str:
    return "\n".join(f"{i}). Sentence-{i}: {s}" for i, s in enumerate(_stage1_sentences(user), 1))


def _stage2_qa(user: str, model_like: bool = False) -> tuple[str, str, str]:
    sentence = user.split("Radiology description sentence:")[-1].split("Desired format:")[0].strip()
    match = MEASURE.search(sentence)
    value = f"{match.group(1)} {match.group(2)}" if match else "unknown"
    aspect = "Thickness" if "thick" in sentence.lower() else ("Size" if match and "x" in match.group(1) else "Diameter")
    if model_like:  # Figure 13: "a specific descriptor or location to uniquely identify the lesion"
        subject = " ".join(re.findall(r"[A-Za-z]+", sentence)[:5]).lower() or "lesion"
        return aspect, f"What is the {aspect.lower()} of the {subject}?", value
    return aspect, f"What is the {aspect.lower()} of the finding described?", value


def _stage2_reply(user: str, model_like: bool = False) -> str:
    aspect, question, answer = _stage2_qa(user, model_like)
    return f"{aspect}\nQuestion: {question} Answer: {answer}"


def _spatial_verdict(user: str) -> dict[str, Any]:
    question = re.search(r"Question: (.*)", user)
    asks_where = bool(question and re.match(r"\s*(where|which lobe|which side)", question.group(1), re.I))
    return {"spatial": asks_where, "category": "laterality and bilateral symmetry" if asks_where else ""}


def template_of(messages: list[dict[str, Any]]) -> str | None:
    """Which prompt template a request comes from (None: not one of the five)."""
    system = str(messages[0].get("content", "")) if messages else ""
    user = str(messages[-1].get("content", "")) if messages else ""
    if "score the following radiology" in user:
        return "scoring"
    if "create 6 questions" in system:
        return "task12"
    if "extract all complete sentences" in system:
        return "task3_stage1"
    if "create one question and answer" in system:
        return "task3_stage2"
    if "requires spatial reasoning" in system:
        return "spatial_judge"
    return None


def scripted_reply(messages: list[dict[str, Any]], model: str, model_like: bool = False) -> str:
    user = str(messages[-1].get("content", "")) if messages else ""
    template = template_of(messages)
    if template == "scoring":
        return _score_reply(user, model, model_like)
    if template == "task12":
        return _task12_reply(user, model_like)
    if template == "task3_stage1":
        return _stage1_reply(user)
    if template == "task3_stage2":
        return _stage2_reply(user, model_like)
    if template == "spatial_judge":
        return json.dumps(_spatial_verdict(user))
    return "I do not know this prompt."


def json_reply(messages: list[dict[str, Any]], model: str, model_like: bool = False) -> str:
    """The same content as :func:`scripted_reply`, as the JSON of ``rad3d_pipeline.llm.schemas``."""
    user = str(messages[-1].get("content", "")) if messages else ""
    template = template_of(messages)
    value: dict[str, Any]
    if template == "scoring":
        value = _scores(user, model, model_like)
    elif template == "task12":
        pairs = _task12_pairs(user, model_like)
        value = {"pairs": [{"index": i, "question": q, "answer": a} for i, (q, a) in enumerate(pairs, 1)]}
    elif template == "task3_stage1":
        value = {"sentences": _stage1_sentences(user)}
    elif template == "task3_stage2":
        aspect, question, answer = _stage2_qa(user, model_like)
        value = {"aspect": aspect, "question": question, "answer": answer}
    elif template == "spatial_judge":
        value = _spatial_verdict(user)
    else:
        return scripted_reply(messages, model, model_like)
    return json.dumps(value)


def prompt_digest(messages: list[dict[str, Any]], model: str) -> str:
    blob = json.dumps({"model": model, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def reply_text(state: ServerState, messages: list[dict[str, Any]], model: str) -> str:
    """The reply in the server's format (``paper``: seeded by the prompt, so a prompt always gets the same)."""
    if state.reply_format == "scripted":
        return scripted_reply(messages, model, state.model_like)
    text = json_reply(messages, model, state.model_like)
    template = template_of(messages)
    if state.reply_format == "paper" and template is not None:
        from tests.paper_formats import to_paper_format

        return to_paper_format(template, text, random.Random(prompt_digest(messages, model)))
    return text


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as production servers (uvicorn, vLLM) set it: headers and body go out in two
        # writes, and with Nagle on, the body waits for the client's delayed ACK (about 40 ms a reply).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = self.path.rstrip("/").split("/")
            if "/batches/" in self.path:
                batch = state.batches.get(parts[-1])
                if batch is None:
                    self._send(404, {"error": {"message": "no such batch"}})
                    return
                with state.lock:
                    batch["_polls"] += 1
                    if batch["_polls"] > state.batch_polls_before_done:
                        batch["status"] = "completed"
                self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                return
            if self.path.endswith("/content"):
                data = state.files.get(parts[-2], b"")
                self.send_response(200)
                self.send_header("Content-Type", "application/jsonl")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _upload(self, raw: bytes) -> None:
            message = BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw
            )
            content = b""
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    content = part.get_payload(decode=True) or b""
            with state.lock:
                file_id = f"file-{len(state.files) + 1}"
                state.files[file_id] = content
            self._send(
                200,
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": 0,
                    "filename": "batch.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                },
            )

        def _create_batch(self, body: dict[str, Any]) -> None:
            lines = state.files.get(body["input_file_id"], b"").decode().splitlines()
            out = []
            for line in lines:
                item = json.loads(line)
                req = item["body"]
                text = reply_text(state, req.get("messages", []), str(req.get("model", "")))
                prompt_tokens = prompt_token_count(req.get("messages", []), state.token_counter)
                with state.lock:
                    state.requests += 1
                    if state.rng.random() < state.faults.rate_malformed:
                        text = "Sorry, here is something else entirely."
                out.append(
                    json.dumps(
                        {
                            "custom_id": item["custom_id"],
                            "response": {
                                "status_code": 200,
                                "body": {
                                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                                    "usage": {
                                        "prompt_tokens": prompt_tokens,
                                        "completion_tokens": state.token_counter(text),
                                    },
                                },
                            },
                        }
                    )
                )
            with state.lock:
                output_id = f"file-{len(state.files) + 1}"
                state.files[output_id] = "\n".join(out).encode()
                batch_id = f"batch-{len(state.batches) + 1}"
                state.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": "/v1/chat/completions",
                    "input_file_id": body["input_file_id"],
                    "completion_window": "24h",
                    "status": "in_progress",
                    "created_at": 0,
                    "output_file_id": output_id,
                    "_polls": 0,
                }
            self._send(200, {k: v for k, v in state.batches[batch_id].items() if not k.startswith("_")})

        def _send_raw(self, status: int, data: bytes, content_type: str, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            self.wfile.write(data)

        def _reset_mid_body(self, data: bytes) -> None:
            """Headers and half the body, then a TCP reset (SO_LINGER 0)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _completion(self, model: str, text: str, finish: str = "stop", prompt_tokens: int = 0) -> dict[str, Any]:
            completion_tokens = state.token_counter(text)
            with state.lock:
                state.prompt_tokens += prompt_tokens
                state.completion_tokens += completion_tokens
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path.endswith("/files"):
                self._upload(raw)
                return
            if self.path.endswith("/batches"):
                self._create_batch(json.loads(raw))
                return
            body = json.loads(raw or b"{}")
            messages = body.get("messages", [])
            model = str(body.get("model", ""))
            digest = prompt_digest(messages, model)
            template = template_of(messages) or ""
            f = state.faults
            with state.lock:
                state.requests += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                roll = state.rng.random()
                state.models.append(model)
                state.prompts.append((template, digest))
                state.bodies.append(body)
            try:
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if state.api_key is not None and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                    error = {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
                    self._send(401, {"error": {**error, "code": "invalid_api_key"}})
                    return
                if state.known_models is not None and model not in state.known_models:
                    message = f"The model `{model}` does not exist or you do not have access to it."
                    self._send(404, {"error": {"message": message, "type": "invalid_request_error"}})
                    return
                if state.latency_s:
                    time.sleep(state.latency_s)
                if f.permanent_rate and int(digest[:8], 16) / 16**8 < f.permanent_rate:
                    with state.lock:
                        state.permanent[digest] = template
                        state.injected["permanent"] += 1
                    if f.permanent_kind == "malformed":
                        self._send(200, self._completion(model, "I cannot help with that request."))
                    else:
                        self._send(500, {"error": {"message": "internal error"}}, {"Retry-After": "0"})
                    return
                kind = self._roll(roll)
                if kind is not None:
                    with state.lock:
                        state.injected[kind] += 1
                if kind == "429":
                    after = f.retry_after
                    if after == "date":
                        after = email.utils.formatdate(time.time(), usegmt=True)
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": after})
                    return
                if kind == "500":
                    extra = {"Retry-After": f.retry_after_5xx} if f.retry_after_5xx else {}
                    self._send(500, {"error": {"message": "internal error"}}, extra)
                    return
                if kind == "timeout":
                    time.sleep(f.timeout_sleep_s)
                if kind == "html":
                    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
                    self._send_raw(200, page, "text/html")
                    return
                if kind == "not_json":
                    self._send_raw(
                        200, b"upstream connect error or disconnect/reset before headers", "application/json"
                    )
                    return
                if kind == "error_body":
                    error = {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                    }
                    self._send(200, {"error": error})
                    return
                if kind == "no_choices":
                    self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "model": model, "choices": []})
                    return
                text = reply_text(state, messages, model)
                if kind == "malformed":
                    text = "Sorry, here is something else entirely."
                finish = "stop"
                if kind == "empty":
                    text = ""
                if kind == "length":
                    text, finish = text[: max(1, len(text) // 2)], "length"
                prompt_tokens = prompt_token_count(messages, state.token_counter)
                with state.lock:
                    state.prompt_tokens_by_digest[digest] = prompt_tokens
                    state.completion_tokens_by_digest[digest] = state.token_counter(text)
                data = json.dumps(self._completion(model, text, finish, prompt_tokens)).encode()
                if kind == "cut_json":
                    self._send_raw(200, data[: len(data) // 2], "application/json")
                    return
                if kind == "reset":
                    self._reset_mid_body(data)
                    return
                self._send_raw(200, data, "application/json")
                with state.lock:
                    state.completed += 1
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _roll(self, roll: float) -> str | None:
            """The fault this request gets (None: a clean reply), from one uniform draw."""
            f = state.faults
            edge = 0.0
            for kind, rate in (
                ("429", f.rate_429),
                ("500", f.rate_500),
                ("timeout", f.rate_timeout),
                ("malformed", f.rate_malformed),
                ("html", f.rate_html),
                ("not_json", f.rate_not_json),
                ("cut_json", f.rate_cut_json),
                ("error_body", f.rate_error_body),
                ("no_choices", f.rate_no_choices),
                ("reset", f.rate_reset),
                ("empty", f.rate_empty),
                ("length", f.rate_length),
            ):
                edge += rate
                if roll < edge:
                    return kind
            return None

    return Handler


class LocalLlmServer:
    """``with LocalLlmServer() as server: server.base_url`` -> http://127.0.0.1:PORT/v1"""

    def __init__(
        self,
        faults: Faults | None = None,
        latency_s: float = 0.0,
        *,
        reply_format: str = "scripted",
        api_key: str | None = None,
        known_models: set[str] | None = None,
        token_counter: Callable[[str], int] = count_tokens,
        model_like: bool = False,
    ) -> None:
        if reply_format not in {"scripted", "json", "paper"}:
            raise ValueError(f"reply_format={reply_format!r}: scripted, json or paper")
        self.state = ServerState(
            faults=faults or Faults(),
            latency_s=latency_s,
            reply_format=reply_format,
            api_key=api_key,
            known_models=known_models,
            token_counter=token_counter,
            model_like=model_like,
        )
        self.state.rng = random.Random(self.state.faults.seed)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> LocalLlmServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
