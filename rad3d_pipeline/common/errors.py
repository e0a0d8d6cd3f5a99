"""Errors that stand for a user's or an input's fault, not a bug.

``rad3d build`` prints the message of such an error as the one line of a failed asset (with the
asset and partition in front), and keeps the traceback for the run log and ``--debug``. So the
message must say everything a user needs: the file (and line, physical, 1-based), and the reason,
e.g. ``dataset/radiology_text_reports/train_reports.csv line 1,204: not UTF-8 (byte 0xe9 at column 148)``.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Base class: the message is the whole story for the user; no traceback on the terminal."""


class InputFileError(UserFacingError):
    """A file-level input fault: missing, unreadable, empty, header-only, a required column missing."""


class LlmStageError(UserFacingError):
    """An LLM stage that cannot go on: the endpoint unreachable, or more failures than the budget allows."""


class SampleDataError(UserFacingError, ValueError):
    """``rad3d sample-data`` cannot write where or what it was asked: a bad ``--patients``, or an ``--out``
    folder holding files that sample-data did not write (a real CT-RATE download, say), or one it cannot create."""
