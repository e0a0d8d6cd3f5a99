"""Progress of long stages (volumes, LLM requests, sentence shards), as log lines at a readable pace.

The core reports through the standard ``logging`` logger ``rad3d.progress``: ``rad3d build`` (which
runs in-process) prints its records on the terminal unless ``--quiet``; in runs launched from the UI
the instance's ``python_logs.managed_python_loggers`` puts them in the run log. Progress never goes
into an output table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOGGER_NAME = "rad3d.progress"
log = logging.getLogger(LOGGER_NAME)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """``label: n/N (p%), r/s, ETA t`` at most every ``interval_s`` seconds, and once at the end.

    ``extra`` returns further text for each line (retries so far, cost so far, ...).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "",
        interval_s: float = 5.0,
        extra: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.label = label
        self.total = max(0, int(total))
        self.unit = unit
        self.interval_s = interval_s
        self.extra = extra
        self.clock = clock
        self.logger = logger or log
        self.done = 0
        self.started = clock()
        self._last_emit = self.started
        self._finished = False

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.label}: {self.done:,}/{self.total:,}{unit}{share}, {rate:.1f}/s"
        if self.done < self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        elif self.done >= self.total:
            text += f", {_duration(elapsed)} in all"
        if self.extra is not None:
            more = self.extra()
            if more:
                text += f", {more}"
        return text

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.done >= self.total:
            self.finish()
        elif now - self._last_emit >= self.interval_s:
            self._last_emit = now
            self.logger.info(self.line())

    def finish(self) -> None:
        if self._finished or self.total == 0:
            return
        self._finished = True
        self.logger.info(self.line())


class TerminalProgress(logging.Handler):
    """Prints ``rad3d.progress`` records, indented under the build's run line."""

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        super().__init__(logging.INFO)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.echo(f"    {record.getMessage()}")
        except Exception:  # a closed terminal never fails a build
            self.handleError(record)
