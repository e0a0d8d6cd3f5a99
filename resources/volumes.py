"""Settings of the volumes stage (profiles, splits, workers, device, CT-RATE version).

The composition root fills them from the settings table (``resources/environment.py``); the field
defaults are the table's.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.ingest.ctrate import Split, parse_splits
from rad3d_pipeline.volumes.profiles import Profile, resolve_profiles
from rad3d_pipeline.volumes.runner import resolve_device
from rad3d_pipeline.volumes.version import VERSION_SETTINGS, VersionSetting
from resources import environment


class VolumeSettings(ConfigurableResource):
    """What the ``volumes`` asset builds and how."""

    profiles: str = Field(
        default=environment.VOLUME_PROFILES.default_value(),
        description="Comma-separated profiles: ctclip, m3d or custom YAML names.",
    )
    profiles_file: str | None = Field(
        default=environment.VOLUME_PROFILES_FILE.default_value(), description="YAML file of custom profiles."
    )
    splits: str = Field(
        default=environment.VOLUME_SPLITS.default_value(),
        description="CT-RATE splits whose volumes to build: valid, train or all.",
    )
    workers: int = Field(
        default=environment.VOLUME_WORKERS.default_value(), description="Worker processes, one volume in flight each."
    )
    device: str = Field(
        default=environment.VOLUME_DEVICE.default_value(), description="auto (cuda when torch sees one), cpu or cuda."
    )
    ctrate_version: str = Field(
        default=environment.CTRATE_VERSION.default_value(),
        description="auto (per volume), v1 (rescale) or v2 (already HU).",
    )

    def profile_list(self) -> list[Profile]:
        return resolve_profiles(self.profiles, self.profiles_file)

    def split_tuple(self) -> tuple[Split, ...]:
        return parse_splits(self.splits)

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def version_setting(self) -> VersionSetting:
        if self.ctrate_version not in VERSION_SETTINGS:
            raise ValueError(f"RAD3D_CTRATE_VERSION={self.ctrate_version!r}: use auto, v1 or v2")
        return self.ctrate_version  # type: ignore[return-value]


def volume_settings_from_env(env: Mapping[str, str] | None = None) -> VolumeSettings:
    """The volumes stage's settings from the settings table (this process's environment, or ``env``)."""
    return VolumeSettings(
        profiles=environment.read(environment.VOLUME_PROFILES, env),
        profiles_file=environment.read(environment.VOLUME_PROFILES_FILE, env),
        splits=environment.read(environment.VOLUME_SPLITS, env),
        workers=environment.read(environment.VOLUME_WORKERS, env),
        device=environment.read(environment.VOLUME_DEVICE, env),
        ctrate_version=environment.read(environment.CTRATE_VERSION, env),
    )
