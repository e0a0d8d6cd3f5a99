"""Output-shaping settings that travel with a run: a fingerprint at launch, one line when a worker differs.

Every machine of a production deployment (webserver, daemon, GPU workers) loads the code location
with its own environment. The settings that shape outputs (volume profiles, splits, models, the
data root, the seed, the shard count, the code versions of the GPU assets) are resolved where a
run is launched and put on the run as tags; a worker executing a step of that run compares them
with its own and refuses the step with one line naming each difference, e.g.::

    RAD3D_VOLUME_PROFILES: worker has ctclip, run was launched with m3d

Secrets are never part of these settings. Dagster-free: the composition root and the resources
call it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# Run tags: the fingerprint (short, for the Runs page) and the settings themselves (JSON).
FINGERPRINT_TAG = "rad3d/settings_fingerprint"
SETTINGS_TAG = "rad3d/settings"

_local: dict[str, str] | None = None


class RunSettingsMismatch(RuntimeError):
    """A worker's output-shaping settings differ from the run's: the step must not run here."""


def fingerprint(settings: Mapping[str, str]) -> str:
    """A short, order-independent digest of the settings."""
    text = json.dumps(dict(sorted(settings.items())), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(settings: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(settings.items())), sort_keys=True, separators=(",", ":"))


def decode(text: str) -> dict[str, str]:
    """The settings of a run's tag; a tag that is not a JSON object of strings is a mismatch of its own."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise RunSettingsMismatch(f"run tag {SETTINGS_TAG} is not JSON: {text[:80]!r}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RunSettingsMismatch(f"run tag {SETTINGS_TAG} is not an object of strings: {text[:80]!r}")
    return dict(value)


def run_tags(settings: Mapping[str, str]) -> dict[str, str]:
    """The tags a launching code location puts on a job so that its settings travel with each run."""
    return {FINGERPRINT_TAG: fingerprint(settings), SETTINGS_TAG: encode(settings)}


def differences(launched: Mapping[str, str], worker: Mapping[str, str]) -> list[str]:
    """One phrase per setting that differs, in name order."""
    absent = "(unset)"
    lines = []
    for name in sorted(set(launched) | set(worker)):
        mine, theirs = worker.get(name, absent), launched.get(name, absent)
        if mine != theirs:
            lines.append(f"{name}: worker has {mine or '(empty)'}, run was launched with {theirs or '(empty)'}")
    return lines


def check(run_tags_: Mapping[str, str], worker: Mapping[str, str]) -> None:
    """Raise :class:`RunSettingsMismatch` (one line) when the run's settings are not the worker's.

    A run without the tags (an in-process ``rad3d build``, a job that does not carry them) passes:
    its steps run in the process that resolved the settings.
    """
    text = run_tags_.get(SETTINGS_TAG)
    if text is None:
        return
    launched = decode(text)
    diffs = differences(launched, worker)
    if diffs:
        raise RunSettingsMismatch(
            "this worker's output settings differ from the run's, step refused: " + "; ".join(diffs)
        )


def register_local(settings: Mapping[str, str]) -> None:
    """Record this process's own settings (the composition root does, when it builds the jobs)."""
    global _local
    _local = dict(settings)


def local_settings() -> dict[str, str] | None:
    """This process's own settings, as the composition root registered them (None before it did)."""
    return None if _local is None else dict(_local)


def file_identity(path: str | None) -> str:
    """A settings file as it shapes outputs: its path and the digest of its content."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    except OSError as exc:
        return f"{path} (unreadable: {exc.strerror})"
    return f"{path} sha256:{digest}"
