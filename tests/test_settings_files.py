"""Settings files (volume profiles, models, judges) as users break them: one line naming file, key and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rad3d.build import user_facing_class_names
from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.common.settings_files import SettingsFileError, SettingsFileNotFoundError, key_path
from rad3d_pipeline.evaluation.models.registry import ModelSpec, parse_models
from rad3d_pipeline.quality.judges import parse_judges
from rad3d_pipeline.volumes.profiles import Profile, ProfileError, load_profiles_file, resolve_profiles
from rad3d_pipeline.volumes.steps import Clip, CropPad, Layout, Normalise, Resample, RescaleToHU


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def one_line_error(error: type[Exception], call: object, *args: object) -> str:
    with pytest.raises(error) as info:
        call(*args)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UserFacingError), message
    return message


def test_key_path() -> None:
    assert key_path(("judges", 1, "model")) == "judges[1].model"
    assert key_path(("profiles", 0, "resample", "spacing")) == "profiles[0].resample.spacing"
    assert key_path(()) == ""


# --------------------------------------------------------------------------- volume profiles

PROFILE_ERRORS = [
    # (profile entry, message after "<file>: profiles[0]")
    ("name: Lung!", ": name: must match [a-z0-9_]+, got 'Lung!'"),
    ("name: x\n    bogus: 1\n    other: 2", " 'x': unknown key(s) bogus, other; known: name, reader,"),
    # A misspelt nested key used to be ignored silently (the window kept its default -1000).
    ("name: x\n    normalise: {kind: window, low: -500}", " 'x': normalise: unknown key(s) low; known: kind,"),
    ("name: x\n    crop_pad: {sise: [8, 8, 8]}", " 'x': crop_pad: unknown key(s) sise; known: size, value"),
    ("name: x\n    normalise: {kind: window, lo: abc}", " 'x': normalise.lo: input should be a valid number"),
    ("name: x\n    normalise: {kind: window, lo: 400, hi: 400}", " 'x': normalise: window needs lo < hi"),
    ("name: x\n    normalise: {kind: scale, divisor: 0}", " 'x': normalise: divisor must not be 0"),
    ("name: x\n    normalise: wat", " 'x': normalise.kind: must be one of scale, minmax, window, zscore, got 'wat'"),
    ("name: x\n    clip: [400, -1000]", " 'x': clip: must be [lo, hi] with lo <= hi, got [400, -1000]"),
    ("name: x\n    clip: [a, 1]", " 'x': clip: must be [lo, hi] with lo <= hi, got ['a', 1]"),
    ("name: x\n    resample: {spacing: [1, 1]}", " 'x': resample.spacing: expected a list of three numbers"),
    ("name: x\n    resample: {spacing: [1, 0, 1]}", " 'x': resample.spacing: every value must be positive"),
    # int(8.5) would have truncated silently to 8 voxels.
    ("name: x\n    resample: {size: [8, 8.5, 8]}", " 'x': resample.size: expected whole numbers, got [8, 8.5, 8]"),
    ("name: x\n    resample: {size: [8, 8, 8], spacing: [1, 1, 1]}", " 'x': resample: needs exactly one of"),
    ("name: x\n    resample: {size: [8, 8, 8], align: middle}", " 'x': resample.align: must be one of centers, origin"),
    ("name: x\n    resample: [1, 2]", " 'x': resample: expected a mapping, got [1, 2]"),
    ("name: x\n    crop_pad: {value: 0}", " 'x': crop_pad.size: required"),
    ("name: x\n    layout: xyq", " 'x': layout.axes: must be a permutation of zyx, got 'xyq'"),
    ("name: x\n    dtype: int8", " 'x': dtype: must be one of float32, float16, got 'int8'"),
    ("name: x\n    reader: itk", " 'x': reader: must be one of nibabel, sitk, got 'itk'"),
]


@pytest.mark.parametrize(("entry", "expected"), PROFILE_ERRORS)
def test_profile_errors_name_file_profile_key_and_reason(tmp_path: Path, entry: str, expected: str) -> None:
    path = write(tmp_path, "profiles.yaml", f"profiles:\n  - {entry}\n")
    message = one_line_error(ProfileError, load_profiles_file, path)
    assert message.startswith(f"{path}: profiles[0]{expected}"), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("profile:\n  - name: x\n", ": expected a mapping with a 'profiles' list"),
        ("- name: x\n", ": expected a mapping with a 'profiles' list"),
        ("", ": expected a mapping with a 'profiles' list"),
        ("profiles: []\nextra: 1\n", ": unknown key(s) extra; known: profiles"),
        ("profiles:\n  - x\n", ": profiles[0] is not a mapping"),
        ("profiles: [\n", " line 2: not valid YAML"),
        ("profiles:\n  - name: a\n  - name: a\n", ": profiles[1]: name 'a' is already taken"),
    ],
)
def test_profiles_file_shape_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    assert one_line_error(ProfileError, load_profiles_file, path).startswith(f"{path}{expected}")


def test_profiles_file_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert one_line_error(ProfileError, load_profiles_file, missing) == f"{missing}: profiles file not found"
    latin1 = write(tmp_path, "latin1.yaml", "profiles:\n  - name: x\n    description: r\xe9sum\xe9\n".encode("latin-1"))
    assert one_line_error(ProfileError, load_profiles_file, latin1).startswith(f"{latin1}: cannot read the profiles")
    expected = "unknown volume profile 'nope'; available: ctclip, m3d"
    assert one_line_error(ProfileError, resolve_profiles, "m3d,nope") == expected


def test_profile_from_yaml_equals_the_profile_built_by_hand(tmp_path: Path) -> None:
    """Defaults, short forms (``normalise: minmax``, ``layout: xzy``) and numbers as floats: the same steps and
    version as the profile written out in Python (an output folder keeps its name only for the same arithmetic)."""
    path = write(
        tmp_path,
        "p.yaml",
        """profiles:
  - name: lung
    clip: [-1000, 400]
    resample: {spacing: [3, 1.5, 1.5], align: origin, interpolation: nearest}
    normalise: {kind: window, lo: -1000, hi: 400}
    crop_pad: {size: [8, 12, 20]}
    layout: {axes: zyx, channel: true}
    dtype: float16
  - name: short
    rescale: false
    reader: sitk
    resample: {size: [4, 8, 8]}
    normalise: minmax
    layout: xzy
    description: short forms
  - name: bare
    normalise: none
""",
    )
    profiles = load_profiles_file(path)
    lung = Profile(
        "lung",
        (
            RescaleToHU(),
            Clip(-1000.0, 400.0),
            Resample(spacing=(3.0, 1.5, 1.5), align="origin", interpolation="nearest"),
            Normalise("window", divisor=1000.0, lo=-1000.0, hi=400.0),
            CropPad((8, 12, 20), 0.0),
            Layout("zyx", True),
        ),
        "nibabel",
        "float16",
        "custom profile",
    )
    short = Profile(
        "short",
        (Resample(size=(4, 8, 8)), Normalise("minmax"), Layout("xzy")),
        "sitk",
        "float32",
        "short forms",
    )
    bare = Profile("bare", (RescaleToHU(), Layout("zyx")), "nibabel", "float32", "custom profile")
    assert profiles == {"lung": lung, "short": short, "bare": bare}
    assert [p.version for p in profiles.values()] == [lung.version, short.version, bare.version]


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  - name: x\n    kind: magic\n", "models[0].kind: unknown kind 'magic' (known: prior, random,"),
        ("models:\n  - kind: prior\n", "models[0].name: required"),
        ("models:\n  - prior\n", "models[0]: expected a mapping, got 'prior'"),
        ("model:\n  - name: prior\n", "unknown key(s) model; known: models"),
        ("models: {name: x}\n", "models: expected a list, got {'name': 'x'}"),
        ("- name: x\n", "expected a mapping, got [{'name': 'x'}]"),
        ("models:\n  - name: m\n    kind: hf_3d_vlm\n", "models[0]: model 'm': kind hf_3d_vlm needs 'path'"),
        ("models:\n  - name: m\n    kind: import\n    path: ''\n", "models[0]: model 'm': kind import needs 'path'"),
        ("models:\n  - name: a/b\n    kind: prior\n", "models[0].name: 'a/b' may not contain '|', ',' or '/'"),
        ("models:\n  - name: [a]\n", "models[0].name: input should be a valid string, got ['a']"),
    ],
)
def test_models_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "models.yaml", text)
    message = one_line_error(SettingsFileError, parse_models, "prior", path)
    assert message.startswith(f"{path}: {expected}"), message
    assert isinstance(SettingsFileError(message), ValueError)


def test_models_file_options_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models.yaml",
        "models:\n  - name: random\n  - name: 7\n    kind: import\n    path: /r.jsonl\n"
        "  - name: qwen\n    kind: openai_vlm\n    model: Qwen/Q\n    n_slices: 8\n    planes: [axial, coronal]\n",
    )
    assert parse_models("prior,random", path) == [
        ModelSpec("prior", "prior", {"model": "prior"}),
        ModelSpec("random", "random", {}),
        ModelSpec("7", "import", {"path": "/r.jsonl"}),
        ModelSpec("qwen", "openai_vlm", {"model": "Qwen/Q", "n_slices": 8, "planes": ["axial", "coronal"]}),
    ]
    assert parse_models("prior", write(tmp_path, "empty.yaml", "")) == [ModelSpec("prior", "prior", {"model": "prior"})]
    missing = tmp_path / "absent.yaml"
    assert one_line_error(FileNotFoundError, parse_models, "", missing) == f"{missing}: models file not found"


# --------------------------------------------------------------------------- judges


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A misspelt endpoint used to be ignored: the judge then scored on the default endpoint.
        ("judges:\n  - name: big\n    base_ulr: http://x\n", "judges[0]: unknown key(s) base_ulr; known: name, model,"),
        ("judges:\n  - name: big\n    base_url: gpu-1:8000\n", "judges[0].base_url: expected an http:// or https://"),
        ("judges:\n  - model: x\n", "judges[0].name: required"),
        ("judge:\n  - name: a\n", "unknown key(s) judge; known: judges"),
        ("judges: [\n", ""),
    ],
)
def test_judges_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "judges.yaml", text)
    message = one_line_error(SettingsFileError, parse_judges, "a", path)
    assert message.startswith(f"{path}: {expected}" if expected else f"{path} line 2: not valid YAML"), message


def test_a_key_pasted_as_api_key_env_is_refused_and_never_shown(tmp_path: Path) -> None:
    secret = "sk-proj-abc123DEF456"
    path = write(tmp_path, "judges.yaml", f"judges:\n  - name: big\n    api_key_env: {secret}\n")
    message = one_line_error(SettingsFileError, parse_judges, None, path)
    assert re.match(re.escape(f"{path}: judges[0].api_key_env: must be the name of an environment variable"), message)
    assert secret not in message and "abc123" not in message


def test_settings_errors_are_one_line_in_a_build() -> None:
    """``rad3d build`` prints a UserFacingError's message alone (rad3d.build.root_cause)."""
    names = user_facing_class_names()
    assert {"SettingsFileError", "SettingsFileNotFoundError", "ProfileError"} <= names
    assert issubclass(SettingsFileNotFoundError, FileNotFoundError) and issubclass(ProfileError, ValueError)
