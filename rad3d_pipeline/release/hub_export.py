"""The Hugging Face Hub form of a release: ``<out>/hub/3DRAD/`` that ``datasets.load_dataset`` loads.

From the release folder in the 3D-RAD layout (``<out>/3DRAD/{test,train}/<TaskFolder>/<Subtask>.csv``)
this writes

- one Parquet file per task config (``task1`` ... ``task6``) and split (``test``, ``train``):
  ``data/task4/test-00000-of-00001.parquet``, the release columns unchanged (``Task`` and
  ``Subtask`` as integers, every other column a string as in the CSVs) plus ``subtask_name`` (the
  CSV's name: the Task 4 label, the Task 5/6 scan letter) and, with a volume profile, ``volume_path``;
- the dataset card ``README.md``: the YAML header (``configs`` with the data files of each config and
  split, ``dataset_info`` with the features and ``num_examples``), then the features, the row counts,
  the build settings, the licence (CT-RATE's terms, CC BY-NC-SA 4.0), the citations and how to reach
  the volumes;
- optionally the ``.npy`` volumes of one preprocessing profile (``<out>/volumes/<profile>/``) under
  ``volumes/<profile>/<release VolumeName stem>.npy`` (hard links where the file system allows,
  else copies), each row's file in ``volume_path`` (relative to the dataset folder; null and counted
  when the volume is missing).

Only ``test`` and ``train`` are exported (the ``train_<p>pct`` fractions are samples of ``train``).
The folder is written into a temporary sibling and swapped in by rename: a failed export leaves the
previous one in place. :func:`verify_hub_export` reads every Parquet file back against the card.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.open_qa.qa_rows import RELEASE_COLUMNS
from rad3d_pipeline.release.export import RELEASE_FOLDER, TASK_FOLDERS

HUB_FOLDER = "hub"
HUB_SPLITS: tuple[str, ...] = ("test", "train")
INT_COLUMNS: tuple[str, ...] = ("Task", "Subtask")
LICENSE = "cc-by-nc-sa-4.0"
TASK_TITLES: dict[int, str] = {
    1: "Image Observation (open-ended)",
    2: "Anomaly Detection (open-ended)",
    3: "Medical Computation (open-ended)",
    4: "Existence Detection (closed-ended, Yes/No)",
    5: "Static Temporal Diagnosis (closed-ended, 4 choices)",
    6: "Longitudinal Temporal Diagnosis (closed-ended, 4 choices, with the label history)",
}
CITATIONS = """\
@inproceedings{gai2025_3drad,
  title     = {3D-RAD: A Comprehensive 3D Radiology Med-VQA Dataset with Multi-Temporal Analysis and
               Diverse Diagnostic Tasks},
  author    = {Gai, Xiaotang and Liu, Jiaxiang and Li, Yichen and Meng, Zijie and Wu, Jian and Liu, Zuozhu},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS), Datasets and Benchmarks Track},
  year      = {2025},
  note      = {arXiv:2506.11147}
}

@article{hamamci2024_ctrate,
  title   = {Developing Generalist Foundation Models from a Multimodal Dataset for 3D Computed Tomography},
  author  = {Hamamci, Ibrahim Ethem and Er, Sezgin and others},
  journal = {arXiv preprint arXiv:2403.17834},
  year    = {2024}
}"""


class HubExportError(UserFacingError, ValueError):
    """The release cannot be exported as it is (one line: file, row, reason)."""


@dataclass(frozen=True)
class BuildSettings:
    """What the card states about how the release was built (every field optional)."""

    llm_models: Mapping[str, str] = field(default_factory=dict)  # stage -> backend/model
    prompt_versions: Mapping[str, str] = field(default_factory=dict)  # template -> version
    seed: int | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    ctrate_version: str = ""
    rad3d_version: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        out += [(f"LLM model, {stage}", str(model)) for stage, model in sorted(self.llm_models.items())]
        out += [(f"prompt version, {name}", str(v)) for name, v in sorted(self.prompt_versions.items())]
        out.append(("seed", "not recorded" if self.seed is None else str(self.seed)))
        out += [(f"threshold, {name}", f"{v:g}") for name, v in sorted(self.thresholds.items())]
        out.append(("CT-RATE version", self.ctrate_version or "not recorded"))
        if self.rad3d_version:
            out.append(("rad3d version", self.rad3d_version))
        out += [(str(k), str(v)) for k, v in sorted(self.extra.items())]
        return out


@dataclass(frozen=True)
class VolumeSource:
    """The ``.npy`` files of one preprocessing profile (``<out>/volumes/<profile>``), named by CT-RATE VolumeName."""

    folder: Path
    profile: str
    description: str = ""  # e.g. "float32 1 x 32 x 256 x 256, min-max [0, 1] (M3D-LaMed)"


@dataclass
class HubExportSummary:
    root: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    num_bytes: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> Arrow bytes
    download_size: dict[str, int] = field(default_factory=dict)  # config -> Parquet bytes
    files: dict[str, int] = field(default_factory=dict)  # relative Parquet path -> rows
    volumes_linked: int = 0
    volumes_missing: set[str] = field(default_factory=set)  # release VolumeNames without a file

    @property
    def rows(self) -> int:
        return sum(self.files.values())


def config_name(task: int) -> str:
    return f"task{task}"


def parquet_path(task: int, split: str) -> str:
    return f"data/{config_name(task)}/{split}-00000-of-00001.parquet"


def _schema(with_volumes: bool) -> pa.Schema:
    fields = [pa.field(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in RELEASE_COLUMNS]
    fields.append(pa.field("subtask_name", pa.string()))
    if with_volumes:
        fields.append(pa.field("volume_path", pa.string()))
    return pa.schema(fields)


def _features(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "dtype": "int64" if pa.types.is_int64(f.type) else "string"} for f in schema]


def _whole_numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = frame[column].str.strip()
    bad = ~values.str.fullmatch(r"-?\d+")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise HubExportError(f"{path}: row {row + 2}: {column} {frame[column].iloc[row]!r} is not a whole number")
    return values.astype("int64")


def read_task_split(split_folder: Path, task: int) -> pd.DataFrame:
    """The rows of one task in one release split folder, files in name order, rows in file order."""
    frames = []
    for path in sorted((split_folder / TASK_FOLDERS[task]).glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(frame.columns) != list(RELEASE_COLUMNS):
            raise HubExportError(f"{path}: columns {', '.join(map(str, frame.columns))}, not the release's")
        for column in INT_COLUMNS:
            frame[column] = _whole_numbers(frame, column, path)
        wrong = frame["Task"] != task
        if wrong.any():
            row = int(wrong.to_numpy().nonzero()[0][0])
            raise HubExportError(f"{path}: row {row + 2}: Task {frame['Task'].iloc[row]} in the folder of Task {task}")
        frame["subtask_name"] = path.stem
        frames.append(frame)
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c in INT_COLUMNS else object) for c in (*RELEASE_COLUMNS, "subtask_name")}
        )
    return pd.concat(frames, ignore_index=True)


def _ctrate_name(release_name: str, split: str) -> str:
    """The CT-RATE VolumeName behind a release one (the test split renames ``valid_`` to ``test_``)."""
    return re.sub(r"^test_", "valid_", release_name) if split == "test" else release_name


def _stem(name: str) -> str:
    return name.removesuffix(".nii.gz").removesuffix(".nii")


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _volume_column(
    frame: pd.DataFrame, split: str, volumes: VolumeSource, staging: Path, summary: HubExportSummary, done: set[str]
) -> pd.Series:
    paths: dict[str, str | None] = {}
    for name in frame["VolumeName"].unique():
        relative = f"volumes/{volumes.profile}/{_stem(name)}.npy"
        if relative in done:
            paths[name] = relative
            continue
        if name in summary.volumes_missing:
            paths[name] = None
            continue
        source = Path(volumes.folder) / f"{_stem(_ctrate_name(name, split))}.npy"
        if source.is_file():
            _link_or_copy(source, staging / relative)
            summary.volumes_linked += 1
            done.add(relative)
            paths[name] = relative
        else:
            summary.volumes_missing.add(name)
            paths[name] = None
    return frame["VolumeName"].map(paths)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def card_header(summary: HubExportSummary, schema: pa.Schema, pretty_name: str) -> dict[str, Any]:
    """The YAML metadata of the card: ``configs`` and ``dataset_info`` per task config."""
    configs, infos = [], []
    for name, splits in summary.counts.items():
        configs.append(
            {
                "config_name": name,
                "data_files": [{"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in splits],
            }
        )
        infos.append(
            {
                "config_name": name,
                "features": _features(schema),
                "splits": [
                    {"name": s, "num_bytes": summary.num_bytes[name][s], "num_examples": n} for s, n in splits.items()
                ],
                "download_size": summary.download_size[name],
                "dataset_size": sum(summary.num_bytes[name].values()),
            }
        )
    return {
        "license": LICENSE,
        "language": ["en"],
        "pretty_name": pretty_name,
        "task_categories": ["visual-question-answering"],
        "tags": ["medical", "radiology", "chest-ct", "3d", "vqa", "ct-rate"],
        "size_categories": [_size_category(summary.rows)],
        "configs": configs,
        "dataset_info": infos,
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def card_text(
    summary: HubExportSummary,
    schema: pa.Schema,
    settings: BuildSettings,
    volumes: VolumeSource | None,
    pretty_name: str,
) -> str:
    header = yaml.safe_dump(card_header(summary, schema, pretty_name), sort_keys=False, allow_unicode=True)
    counts = [
        [name, TASK_TITLES[int(name.removeprefix("task"))], *[f"{splits.get(s, 0):,}" for s in HUB_SPLITS]]
        for name, splits in summary.counts.items()
    ]
    totals = {s: sum(splits.get(s, 0) for splits in summary.counts.values()) for s in HUB_SPLITS}
    counts.append(["**all**", "", *[f"**{totals[s]:,}**" for s in HUB_SPLITS]])
    described = {
        "Task": "task number (1-6), as in the release",
        "Subtask": "subtask number within the task, as in the release (Task 4: the label file's alphabetical position)",
        "VolumeName": "the CT volume (`test_` volumes are CT-RATE `valid_` volumes)",
        "Question": "the question",
        "Answer": "the reference answer",
        "QuestionType": "`Open` or `Close`",
        "AnswerChoice": "the letter of the answer on closed questions, `-` on open ones",
        "subtask_name": (
            "the release CSV the row comes from (Task 4: the CT-RATE label; Tasks 5-6: the current scan's letter)"
        ),
        "volume_path": (
            f"the `.npy` volume of profile `{volumes.profile if volumes else ''}`, relative to this folder "
            "(null: missing)"
        ),
    }
    features = [
        [
            f"`{f.name}`",
            "int64" if pa.types.is_int64(f.type) else "string",
            described.get(f.name, "a choice, `-` when unused"),
        ]
        for f in schema
    ]
    settings_rows = [[k, f"`{v}`"] for k, v in settings.rows()]
    first = next(iter(summary.counts), "task4")
    if volumes is None:
        volume_text = (
            "This export holds no volumes. The questions refer to CT-RATE volumes by `VolumeName`: download them from "
            "[CT-RATE](https://huggingface.co/datasets/ibrahimhamamci/CT-RATE) after accepting its terms "
            "(`test_<patient>_<scan>_<recon>` is CT-RATE's `valid_<patient>_<scan>_<recon>`, in "
            "`dataset/valid/valid_<patient>/valid_<patient>_<scan>/`; `train_` volumes are under `dataset/train/`), "
            "then preprocess them as the model you evaluate expects (`rad3d build --select volumes`)."
        )
    else:
        missing = len(summary.volumes_missing)
        described_as = f" ({volumes.description})" if volumes.description else ""
        examples = ", ".join(sorted(summary.volumes_missing)[:5])
        volume_text = (
            f"The `.npy` volumes of the preprocessing profile `{volumes.profile}` are under "
            f"`volumes/{volumes.profile}/`{described_as}, one file per `VolumeName`; each row names its "
            f"file in `volume_path`, relative to this folder. {summary.volumes_linked:,} volume files; "
            f"{missing:,} volume(s) referenced by the questions have no file here"
            f"{' (their `volume_path` is null), e.g. ' + examples if missing else ''}."
        )
    parts = [
        f"---\n{header}---",
        f"# {pretty_name}",
        "The 3D-RAD radiology VQA benchmark on CT-RATE chest CTs, rebuilt by the "
        "[rad3d](https://github.com/Tang-xiaoxiao/3D-RAD) pipeline: six tasks, one config each, in the layout of the "
        "3D-RAD release (`3DRAD/{test,train}/<Task folder>/<Subtask>.csv`) with the same columns.",
        "```python\nfrom datasets import load_dataset\n\n"
        f'ds = load_dataset("<this repository or folder>", "{first}", split="test")\n```',
        "## Configs and row counts\n\n" + _table(["config", "task", *HUB_SPLITS], counts),
        "## Features\n\n" + _table(["column", "type", "meaning"], features),
        "## How this release was built\n\n" + _table(["setting", "value"], settings_rows),
        "## Volumes\n\n" + volume_text,
        "## License\n\nDerived from CT-RATE and distributed under CT-RATE's terms: "
        "[CC BY-NC-SA 4.0](https://creativecommons.org/licenses/by-nc-sa/4.0/) (non-commercial research use, "
        "attribution, share-alike). Users must also accept CT-RATE's own terms of use.",
        "## Citation\n\nCite 3D-RAD and CT-RATE:\n\n```bibtex\n" + CITATIONS + "\n```",
    ]
    return "\n\n".join(parts) + "\n"


def write_hub_export(
    release_root: Path,
    out: Path | None = None,
    *,
    settings: BuildSettings | None = None,
    volumes: VolumeSource | None = None,
    pretty_name: str = "3D-RAD (rebuilt)",
    dataset_name: str = RELEASE_FOLDER,
) -> HubExportSummary:
    """Write ``<out>/hub/<dataset_name>/`` from the release at ``release_root`` (``<out>/3DRAD``).

    ``out`` defaults to the release's parent. Raises :class:`HubExportError` when the release has
    no ``test`` or ``train`` rows, a CSV has other columns, or a Task/Subtask is not a whole number.
    """
    release_root = Path(release_root)
    if not release_root.is_dir():
        raise HubExportError(f"{release_root}: no release folder to export")
    settings = settings or BuildSettings()
    final = Path(out if out is not None else release_root.parent) / HUB_FOLDER / dataset_name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    summary = HubExportSummary(final)
    schema = _schema(volumes is not None)
    linked: set[str] = set()
    try:
        for task in TASK_FOLDERS:
            for split in HUB_SPLITS:
                folder = release_root / split
                if not folder.is_dir():
                    continue
                frame = read_task_split(folder, task)
                if frame.empty:
                    continue
                if volumes is not None:
                    frame["volume_path"] = _volume_column(frame, split, volumes, staging, summary, linked)
                table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
                relative = parquet_path(task, split)
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, staging / relative)
                summary.files[relative] = table.num_rows
                name = config_name(task)
                summary.counts.setdefault(name, {})[split] = table.num_rows
                # as datasets counts a split: the Arrow bytes of its table; the download: the Parquet bytes
                summary.num_bytes.setdefault(name, {})[split] = int(table.nbytes)
                summary.download_size[name] = summary.download_size.get(name, 0) + (staging / relative).stat().st_size
        if not summary.files:
            raise HubExportError(f"{release_root}: no {' or '.join(HUB_SPLITS)} rows to export")
        (staging / "README.md").write_text(card_text(summary, schema, settings, volumes, pretty_name), encoding="utf-8")
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary


def read_card_header(root: Path) -> dict[str, Any]:
    """The YAML header of ``<root>/README.md``."""
    text = (Path(root) / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if match is None:
        raise HubExportError(f"{root / 'README.md'}: no YAML header")
    header = yaml.safe_load(match.group(1))
    if not isinstance(header, dict):
        raise HubExportError(f"{root / 'README.md'}: the YAML header is not a mapping")
    return header


def verify_hub_export(summary: HubExportSummary) -> list[str]:
    """Problems of the export on disk (empty when it holds): every Parquet file's rows against the card."""
    problems: list[str] = []
    header = read_card_header(summary.root)
    card = {
        info["config_name"]: {s["name"]: int(s["num_examples"]) for s in info["splits"]}
        for info in header.get("dataset_info", [])
    }
    if card != summary.counts:
        problems.append(f"card counts {card} differ from the export's {summary.counts}")
    on_disk = {p.relative_to(summary.root).as_posix() for p in summary.root.glob("data/*/*.parquet")}
    if on_disk != set(summary.files):
        problems.append(f"Parquet files on disk {sorted(on_disk ^ set(summary.files))} differ from those written")
    for relative, rows in summary.files.items():
        path = summary.root / relative
        if path.is_file() and pq.ParquetFile(path).metadata.num_rows != rows:
            problems.append(f"{relative}: {pq.ParquetFile(path).metadata.num_rows} rows on disk, {rows} written")
    return problems
