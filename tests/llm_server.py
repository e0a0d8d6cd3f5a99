"""A local OpenAI-compatible chat-completions server for the tests (loopback only).

Replies are scripted in the paper's formats from the prompt itself, so a run against it
is deterministic. Fault injection: 429 with Retry-After, 500, slow replies (client
timeouts) and malformed replies, each at a rate, decided by a seeded generator per
request. Counts requests and the largest number in flight.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import random
import re
import threading
import time
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


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    rate_malformed: float = 0.0
    retry_after: str = "0.05"
    timeout_sleep_s: float = 2.0
    seed: int = 0


@dataclass
class ServerState:
    faults: Faults = field(default_factory=Faults)
    latency_s: float = 0.0
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


def _score_reply(user: str, model: str) -> str:
    question = re.search(r"Question: (.*)", user)
    answer = re.search(r"Answer: (.*)", user)
    text = f"{model}|{question.group(1) if question else ''}|{answer.group(1) if answer else ''}"
    digest = hashlib.sha256(text.encode()).digest()
    scores = {name: 2 + digest[i] % 4 for i, name in enumerate(SCORE_NAMES)}  # 2..5
    return "<think>Checking the pair.</think>\n" + json.dumps(scores, indent=2)


def _task12_reply(user: str) -> str:
    findings = re.search(r"Findings: (.*)", user)
    text = findings.group(1) if findings else ""
    where = LOCATION.search(text)
    place = where.group(0).lower() if where else "right lower lobe"
    starters = re.findall(r"Question-\d: (\w+) \.\.\.", user) or ["What"] * 6
    words = [w for w in re.findall(r"[a-z]{6,}", text.lower())][:6] or ["normal"] * 6
    lines = [
        "1). Anatomical observation (based on Findings)",
        f"**Question-1:** {starters[0]} is the appearance of the trachea? Answer: {words[0 % len(words)].capitalize()}",
        "2). Pathological observation (based on Findings)",
        f"Question-2: {starters[1]} finding involves the {place}? Answer: {words[1 % len(words)].capitalize()}",
        "3). Abnormality type (based on Findings)",
        f"Question-3: {starters[2]} abnormality type is in the {place}? Answer: Nodule",
        "4). Abnormality feature (based on Findings)",
        f"Question-4: {starters[3]} feature does the {place} lesion show? Answer: {words[2 % len(words)].capitalize()}",
        "5). Abnormality position (based on Findings)",
        f"Question-5: {starters[4]} is the lesion located? Answer: {place.capitalize()}",
        "6). Abnormality or normality diagnosis (based on Impressions)",
        f"Question-6: {starters[5]} diagnosis fits the {place}? Answer: {words[3 % len(words)].capitalize()}",
    ]
    return "\n".join(lines)


def _stage1_reply(user: str) -> str:
    report = user.split("Radiology finding report:")[-1].split("Desired format:")[0]
    sentences = [s.strip() for s in re.split(r"(?<=[a-z])\.\s+", report) if MEASURE.search(s)]
    return "\n".join(f"{i}). Sentence-{i}: {s}" for i, s in enumerate(sentences, 1))


def _stage2_reply(user: str) -> str:
    sentence = user.split("Radiology description sentence:")[-1].split("Desired format:")[0].strip()
    match = MEASURE.search(sentence)
    value = f"{match.group(1)} {match.group(2)}" if match else "unknown"
    aspect = "Thickness" if "thick" in sentence.lower() else ("Size" if match and "x" in match.group(1) else "Diameter")
    return f"{aspect}\nQuestion: What is the {aspect.lower()} of the finding described? Answer: {value}"


def scripted_reply(messages: list[dict[str, Any]], model: str) -> str:
    system = str(messages[0].get("content", "")) if messages else ""
    user = str(messages[-1].get("content", "")) if messages else ""
    if "score the following radiology" in user:
        return _score_reply(user, model)
    if "create 6 questions" in system:
        return _task12_reply(user)
    if "extract all complete sentences" in system:
        return _stage1_reply(user)
    if "create one question and answer" in system:
        return _stage2_reply(user)
    if "requires spatial reasoning" in system:
        question = re.search(r"Question: (.*)", user)
        asks_where = bool(question and re.match(r"\s*(where|which lobe|which side)", question.group(1), re.I))
        category = "laterality and bilateral symmetry" if asks_where else ""
        return json.dumps({"spatial": asks_where, "category": category})
    return "I do not know this prompt."


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
                text = scripted_reply(req.get("messages", []), str(req.get("model", "")))
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
                                    "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
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
            with state.lock:
                state.requests += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                roll = state.rng.random()
                model = str(body.get("model", ""))
                state.models.append(model)
            try:
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                f = state.faults
                if state.latency_s:
                    time.sleep(state.latency_s)
                edge = f.rate_429
                if roll < edge:
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": f.retry_after})
                    return
                edge += f.rate_500
                if roll < edge:
                    self._send(500, {"error": {"message": "internal error"}})
                    return
                edge += f.rate_timeout
                if roll < edge:
                    time.sleep(f.timeout_sleep_s)
                text = scripted_reply(body.get("messages", []), model)
                edge += f.rate_malformed
                if roll < edge:
                    text = "Sorry, here is something else entirely."
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                reply = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(text.split()),
                        "total_tokens": prompt_tokens + len(text.split()),
                    },
                }
                self._send(200, reply)
                with state.lock:
                    state.completed += 1
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


class LocalLlmServer:
    """``with LocalLlmServer() as server: server.base_url`` -> http://127.0.0.1:PORT/v1"""

    def __init__(self, faults: Faults | None = None, latency_s: float = 0.0) -> None:
        self.state = ServerState(faults=faults or Faults(), latency_s=latency_s)
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
