"""Settings of the volumes stage (profiles, splits, workers, device, CT-RATE version), from the environment."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.ctrate import Split, parse_splits
from rad3d_pipeline.volumes.profiles import Profile, resolve_profiles
from rad3d_pipeline.volumes.runner import resolve_device
from rad3d_pipeline.volumes.version import VERSION_SETTINGS, VersionSetting


class VolumeSettings(ConfigurableResource):
    """What the ``volumes`` asset builds and how."""

    profiles: str = Field(default="m3d", description="Comma-separated profiles: ctclip, m3d or custom YAML names.")
    profiles_file: str | None = Field(default=None, description="YAML file of custom profiles.")
    splits: str = Field(default="valid", description="CT-RATE splits whose volumes to build: valid, train or all.")
    workers: int = Field(default=1, description="Worker processes, one volume in flight each.")
    device: str = Field(default="auto", description="auto (cuda when torch sees one), cpu or cuda.")
    ctrate_version: str = Field(default="auto", description="auto (per volume), v1 (rescale) or v2 (already HU).")

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


def volume_settings_from_env() -> VolumeSettings:
    env = os.environ
    return VolumeSettings(
        profiles=env.get("RAD3D_VOLUME_PROFILES", "m3d"),
        profiles_file=env.get("RAD3D_VOLUME_PROFILES_FILE") or None,
        splits=env.get("RAD3D_VOLUME_SPLITS", "valid"),
        workers=int(env.get("RAD3D_VOLUME_WORKERS", "1")),
        device=env.get("RAD3D_VOLUME_DEVICE", "auto"),
        ctrate_version=env.get("RAD3D_CTRATE_VERSION", "auto"),
    )
