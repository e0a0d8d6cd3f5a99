"""Progress lines: pace, rate, ETA, the final line, and the terminal handler."""

from __future__ import annotations

import logging

import pytest

from rad3d_pipeline.common.progress import LOGGER_NAME, Progress, TerminalProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_the_interval_with_rate_eta_and_a_final_line() -> None:
    clock, lines = Clock(), []
    logger = logging.getLogger("rad3d.progress.test")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = TerminalProgress(lines.append)
    logger.addHandler(handler)
    try:
        progress = Progress("volumes", 100, unit="volumes", interval_s=5, clock=clock, logger=logger)
        for _ in range(10):  # 10 volumes in 2 s: no line yet
            clock.now += 0.2
            progress.advance()
        assert lines == []
        clock.now += 3.0  # 5 s since the start
        progress.advance(10)
        assert lines == ["    volumes: 20/100 volumes (20%), 4.0/s, ETA 20s"]
        clock.now += 1.0
        progress.advance(79)
        assert len(lines) == 1  # within the interval
        progress.advance(1)
        assert lines[-1] == "    volumes: 100/100 volumes (100%), 16.7/s, 6s in all"
        progress.advance(0)
        progress.finish()
        assert len(lines) == 2  # the final line once
    finally:
        logger.removeHandler(handler)


def test_extra_text_and_an_empty_stage() -> None:
    clock, lines = Clock(), []
    logger = logging.getLogger("rad3d.progress.test2")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(TerminalProgress(lines.append))
    progress = Progress("qa_scores", 2, interval_s=0, clock=clock, logger=logger, extra=lambda: "3 retries, $0.0012")
    clock.now += 1
    progress.advance()
    assert lines == ["    qa_scores: 1/2 (50%), 1.0/s, ETA 1s, 3 retries, $0.0012"]
    Progress("nothing", 0, clock=clock, logger=logger).finish()
    assert len(lines) == 1


def test_the_logger_name_is_the_one_the_instance_captures() -> None:
    from pathlib import Path

    import yaml

    for path in ("dagster.yaml", "rad3d/dagster.yaml", "deploy/dagster.production.yaml"):
        config = yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())
        managed = config["python_logs"]["managed_python_loggers"]
        assert any(name == LOGGER_NAME or LOGGER_NAME.startswith(name + ".") for name in managed), path
        assert config["python_logs"]["python_log_level"] == "INFO", path


def test_llm_requests_report_progress(caplog: pytest.LogCaptureFixture) -> None:
    """run_all, which every LLM stage goes through, counts its requests on the progress logger."""
    import asyncio

    from rad3d_pipeline.llm.client import run_all

    async def answer(i: int) -> int:
        await asyncio.sleep(0)
        return i

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        results = run_all([lambda i=i: answer(i) for i in range(7)], label="qa_scores")
    assert results == list(range(7))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert lines and lines[-1].startswith("qa_scores: 7/7 requests (100%)") and "0 retries, ~$0.0000" in lines[-1]
