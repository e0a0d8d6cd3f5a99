"""Throughput of the LLM layer against a local endpoint with a fixed latency.

Ideal throughput is concurrency / latency; the target is at least 80% of it. Also
reports the per-request overhead of the client (time beyond the ideal, per request)
and the cost of a fully cached rerun, all measured in this process.

    .venv/bin/python benchmarks/llm_throughput.py [--requests 400] [--concurrency 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient, run_all
from rad3d_pipeline.llm.parsers import parse_scores
from rad3d_pipeline.llm.prompts import load_template
from tests.llm_server import LocalLlmServer


def _serve(latency: float, port_queue) -> None:  # type: ignore[no-untyped-def]
    with LocalLlmServer(latency_s=latency) as server:
        port_queue.put(server.base_url)
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    template = load_template("scoring")
    # The server runs in its own process so that it does not share the client's interpreter.
    queue: multiprocessing.Queue[str] = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(args.latency, queue), daemon=True)
    process.start()
    base_url = queue.get(timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        config = EndpointConfig(model="bench", base_url=base_url, api_key="k", max_concurrency=args.concurrency)
        client = LlmClient(config, ResponseCache(Path(tmp) / "cache.sqlite"))

        def jobs(c: LlmClient, count: int = args.requests, prefix: str = "finding"):  # type: ignore[no-untyped-def]
            def make(i: int):  # type: ignore[no-untyped-def]
                messages = template.messages(Question=f"Where is {prefix} {i}?", Answer="Left lower lobe")
                return lambda: c.complete_parsed(messages, parse_scores, template_version=template.template_version)

            return [make(i) for i in range(count)]

        # Warm-up (not timed): the first request imports the SDK's lazily loaded modules, about 1 s once
        # per process, which would otherwise be charged to the steady-state throughput.
        start = time.perf_counter()
        run_all(jobs(client, args.concurrency, "warm-up"), [client])
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = run_all(jobs(client), [client])
        elapsed = time.perf_counter() - start
        assert all(o.value is not None for o in outcomes)
        ideal_rate = args.concurrency / args.latency
        rate = args.requests / elapsed
        ideal_time = args.requests / ideal_rate
        overhead_ms = (elapsed - ideal_time) / args.requests * 1000 * args.concurrency
        cached = LlmClient(config, ResponseCache(Path(tmp) / "cache.sqlite"))
        start = time.perf_counter()
        run_all(jobs(cached), [cached])
        rerun = time.perf_counter() - start
    print(f"requests: {args.requests}, concurrency: {args.concurrency}, latency: {args.latency * 1000:.0f} ms")
    print(f"throughput: {rate:.1f} req/s of an ideal {ideal_rate:.1f} req/s ({rate / ideal_rate:.1%}; target >= 80%)")
    print(f"client overhead per request (beyond the server's latency): {overhead_ms:.1f} ms")
    print(f"warm-up (first {args.concurrency} requests, SDK imports included, not timed above): {warmup:.2f} s")
    print(
        f"cached rerun: {rerun:.2f} s for {args.requests} requests ({rerun / args.requests * 1000:.2f} ms each, "
        f"{cached.accounting.requests} sent)"
    )
    process.terminate()


if __name__ == "__main__":
    main()
