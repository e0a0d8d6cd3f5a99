"""Data versions come from content: what an identical rebuild keeps and a changed shard changes.

- The core (:mod:`rad3d_pipeline.common.content_version`): one table's version is the same in another process
  and after a Parquet round trip, and changes with any value, row order, column, dtype.
- Through a Dagster instance and the real definitions (CT-RATE sources observed per shard, ingest,
  sentences, patients), read with Dagster's own stale-status resolver (what the UI shows):
  an identical rebuild, even under a new code version, leaves everything fresh at partition and asset
  level; a changed shard rebuilt alone marks exactly its partitions downstream stale.
- Honest about Dagster 1.13: a run over a partition range records ONE data version for every partition
  of the range (``Output.data_version`` is per step output; dagster-io/dagster#18649, #34013), so a
  changed shard rebuilt inside a range marks the downstream partitions of that whole range stale; each
  partition's own ``content_version`` metadata still tells which one changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, AssetsDefinition, AssetSpec, DagsterInstance, Definitions, map_asset_specs, materialize
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest

from rad3d.definitions import build_definitions
from rad3d_pipeline.common.content_version import Recorded, combined_version, frame_version, output_data_version
from rad3d_pipeline.common.parquet_atomic import write_parquet_atomic
from rad3d_pipeline.ingest.patients import shard_key
from rad3d_pipeline.synthetic.sample_data import write_sample_dataset
from tests.dagster_runs import SHARD_RANGE

warnings.filterwarnings("ignore", module="dagster")
REPO = Path(__file__).resolve().parents[1]


def sample_frame() -> pd.DataFrame:
    """Every kind of column the tables hold: text (with a missing value), ints, floats (NaN), flags, lists,
    a dict, a set (whose order differs per process), timestamps, a categorical."""
    return pd.DataFrame(
        {
            "VolumeName": ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz", None],
            "n": [1, 2, 3],
            "mm": [5.0, np.nan, 12.5],
            "negated": [True, False, True],
            "lengths_mm": [[5.0, 3.0], [], [12.5]],
            "kinds": [["size"], ["size", "volume"], []],
            "extra": [{"b": 1, "a": [1, 2]}, {}, {"z": None}],
            "findings": [{"nodule", "effusion", "emphysema", "atelectasis"}, set(), {"cardiomegaly"}],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
            "side": pd.Categorical(["left", "right", "left"]),
        }
    )


# ---------------------------------------------------------------- the core


def test_same_content_same_version_in_another_process_and_index(tmp_path: Path) -> None:
    frame = sample_frame()
    here = frame_version(frame)
    shuffled_index = frame.set_axis([10, 5, 7]).copy()
    assert frame_version(shuffled_index) == here  # the index is not content
    as_arrays = frame.assign(lengths_mm=[np.array(v) for v in frame["lengths_mm"]])
    assert frame_version(as_arrays) == here  # a list and the array Parquet reads it back as
    reordered_keys = frame.assign(extra=[{"a": [1, 2], "b": 1}, {}, {"z": None}])
    assert frame_version(reordered_keys) == here
    frame.to_pickle(tmp_path / "frame.pkl")
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import pandas as pd; "
        "from rad3d_pipeline.common.content_version import frame_version; "
        "print(frame_version(pd.read_pickle(sys.argv[2])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    args = [sys.executable, "-c", code, str(REPO), str(tmp_path / "frame.pkl")]
    other = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip() == here


def _set(frame: pd.DataFrame, column: str, row: int, value: object) -> pd.DataFrame:
    values = frame[column].tolist()
    values[row] = value
    return frame.assign(**{column: pd.Series(values, dtype=frame[column].dtype)})


MUTATIONS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "one text cell": lambda f: _set(f, "VolumeName", 1, "valid_2_a_2.nii.gz"),
    "missing text becomes empty": lambda f: _set(f, "VolumeName", 2, ""),
    "one int": lambda f: _set(f, "n", 0, 4),
    "NaN becomes a number": lambda f: _set(f, "mm", 1, 0.0),
    "one flag": lambda f: _set(f, "negated", 1, True),
    "a list element": lambda f: _set(f, "kinds", 1, ["size", "area"]),
    "a list's order": lambda f: _set(f, "kinds", 1, ["volume", "size"]),
    "a number as text in a list": lambda f: _set(f, "lengths_mm", 2, ["12.5"]),
    "one dict value": lambda f: _set(f, "extra", 0, {"b": 2, "a": [1, 2]}),
    "a category": lambda f: _set(f, "side", 0, "right"),
    "a set element": lambda f: _set(f, "findings", 2, {"cardiomegaly", "nodule"}),
    "row order": lambda f: f.iloc[[1, 0, 2]],
    "a row less": lambda f: f.iloc[:2],
    "a column renamed": lambda f: f.rename(columns={"n": "count"}),
    "column order": lambda f: f[list(reversed(f.columns))],
    "a column dropped": lambda f: f.drop(columns=["extra"]),
    "int to float": lambda f: f.assign(n=f["n"].astype(float)),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_any_change_changes_the_version(name: str) -> None:
    frame = sample_frame()
    assert frame_version(MUTATIONS[name](frame)) != frame_version(frame), name


def test_a_parquet_round_trip_keeps_the_version(tmp_path: Path) -> None:
    """Downstream reads the file: the version of what was written is the version of what is read."""
    frame = sample_frame().drop(columns=["extra", "findings"])  # Parquet stores no empty struct, no set
    write_parquet_atomic(frame, tmp_path / "t.parquet")
    assert frame_version(pd.read_parquet(tmp_path / "t.parquet")) == frame_version(frame)
    empty = frame.iloc[:0]
    write_parquet_atomic(empty, tmp_path / "e.parquet")
    assert frame_version(pd.read_parquet(tmp_path / "e.parquet")) == frame_version(empty)


def test_a_range_version_changes_with_any_partition() -> None:
    parts = {"00": "a" * 24, "01": "b" * 24}
    assert combined_version(parts) == combined_version(dict(reversed(list(parts.items()))))
    assert combined_version(parts) != combined_version({**parts, "01": "c" * 24})
    assert combined_version(parts) != combined_version({"00": "b" * 24, "01": "a" * 24})


def test_a_run_keeps_a_data_version_only_for_the_content_it_was_given_to() -> None:
    a, b, c = "a" * 24, "b" * 24, "c" * 24
    # A range's first run: a new version for the whole range; a single partition's: its own content's.
    assert output_data_version({"00": a, "01": b}, {}) == combined_version({"00": a, "01": b})
    assert output_data_version({"00": a}, {"00": None}) == a
    # Nothing changed and all carried one version (a range run's): it stays, for the range and for one partition.
    was = {"00": Recorded(a, "R"), "01": Recorded(b, "R")}
    assert output_data_version({"00": a, "01": b}, was) == "R"
    assert output_data_version({"01": b}, was) == "R"
    # One content changed: new versions, never the old one.
    assert output_data_version({"01": c}, was) == c
    assert output_data_version({"00": a, "01": c}, was) == combined_version({"00": a, "01": c})
    # Nothing changed, but the partitions carry different versions: no single one can stay.
    mixed = {"00": Recorded(a, "R"), "01": Recorded(b, b)}
    assert output_data_version({"00": a, "01": b}, mixed) == combined_version({"00": a, "01": b})
    # A materialization from before content versions (no content recorded) is not kept.
    assert output_data_version({"00": a}, {"00": Recorded(None, "R")}) == a
    with pytest.raises(ValueError, match="at least one partition"):
        output_data_version({}, {})


# ---------------------------------------------------------------- through the instance

SHARD_RANGE_KEYS = [f"{i:02d}" for i in range(16)]
SELECTION = ["ctrate_labels", "ctrate_reports", "report_sentences", "patients"]
SOURCES = ["ctrate_label_files", "ctrate_report_files"]


class Build:
    """The real definitions over a small sample; runs as `rad3d build` makes them, against one instance."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "ct"
        write_sample_dataset(self.root, patients=6, seed=3)
        self.defs = build_definitions(ctrate_root=str(self.root), out_dir=str(tmp / "out"))
        self.instance = DagsterInstance.ephemeral()

    def with_code_versions(self, bumped: set[str]) -> None:
        """A new code version for ``bumped`` (a refactor that keeps the output)."""

        def bump(spec: AssetSpec) -> AssetSpec:
            if spec.key.to_user_string() not in bumped:
                return spec
            return spec.replace_attributes(code_version=f"{spec.code_version}-refactored")

        assets = list(self.defs.assets or [])
        tables = [a for a in assets if isinstance(a, AssetsDefinition)]
        others = [a for a in assets if not isinstance(a, AssetsDefinition)]
        self.defs = Definitions(assets=[*map_asset_specs(bump, tables), *others], resources=self.defs.resources)

    def run(self, selection: list[str], tags: dict[str, str] | None = None, partition: str | None = None) -> None:
        result = materialize(
            list(self.defs.assets or []),  # type: ignore[arg-type]
            resources=dict(self.defs.resources or {}),
            selection=selection,
            instance=self.instance,
            tags=tags,
            partition_key=partition,
            raise_on_error=False,
        )
        assert result.success, [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]

    def observe(self) -> None:
        self.run(SOURCES)

    def build(self) -> None:
        """Observe the sources, then one run over every shard (the unpartitioned patients in it)."""
        self.observe()
        self.run(SELECTION, tags=SHARD_RANGE)

    def stale(self) -> dict[str, list[str]]:
        """What the UI shows as stale, per asset: its stale partitions, ``[""]`` for an unpartitioned one."""
        graph = self.defs.resolve_asset_graph()
        resolver = CachingStaleStatusResolver(self.instance, graph, LoadingContextForTest(self.instance))
        stale: dict[str, list[str]] = {}
        for name in SELECTION:
            pdef = graph.get(AssetKey(name)).partitions_def
            for partition in pdef.get_partition_keys() if pdef else [None]:
                if resolver.get_status(AssetKey(name), partition).value != "FRESH":
                    stale.setdefault(name, []).append(partition or "")
        return stale

    def _latest(self, name: str, read: Callable[[Any], str]) -> dict[str, str]:
        """``read`` of each partition's latest materialization record."""
        records = self.instance.fetch_materializations(AssetKey(name), limit=10_000).records
        return {str(r.partition_key): read(r) for r in sorted(records, key=lambda r: r.storage_id)}

    def content_versions(self, name: str) -> dict[str, str]:
        """Each partition's latest ``content_version`` (metadata the IO manager adds per partition)."""
        return self._latest(name, lambda r: str(r.asset_materialization.metadata["content_version"].value))

    def data_versions(self, name: str) -> dict[str, str]:
        """Each partition's latest data version, as Dagster recorded it."""
        return self._latest(name, lambda r: str(r.event_log_entry.tags["dagster/data_version"]))

    def edit_report(self, sentence: str) -> str:
        """Append a sentence to the first report's findings; returns that patient's shard."""
        path = self.root / "dataset" / "radiology_text_reports" / "validation_reports.csv"
        frame = pd.read_csv(path)
        frame.loc[0, "Findings_EN"] = f"{frame.loc[0, 'Findings_EN']} {sentence}"
        frame.to_csv(path, index=False)
        return _shard_of(str(frame.loc[0, "VolumeName"]))

    def flip_label(self, avoid: str) -> str:
        """Flip one label of the first volume outside shard ``avoid`` (the patients table does not hold labels);
        returns that patient's shard."""
        for path in sorted((self.root / "dataset" / "multi_abnormality_labels").glob("*.csv")):
            frame = pd.read_csv(path)
            for i, volume in enumerate(frame["VolumeName"]):
                if _shard_of(str(volume)) != avoid:
                    frame.loc[i, "Cardiomegaly"] = 1 - int(frame.loc[i, "Cardiomegaly"])
                    frame.to_csv(path, index=False)
                    return _shard_of(str(volume))
        raise AssertionError(f"every labelled volume of the sample is in shard {avoid}")


def _shard_of(volume: str) -> str:
    split, patient = volume.split("_")[:2]
    return shard_key(f"{split}_{patient}", 16)


@pytest.mark.slow
def test_identical_rebuilds_stay_fresh_and_a_changed_shard_stales_exactly_its_partitions(tmp_path: Path) -> None:
    build = Build(tmp_path)
    build.build()
    assert build.stale() == {}
    sentences = build.content_versions("report_sentences")
    # Each partition's content version is the hash of its own file; the range's data version covers them all.
    for shard, version in sentences.items():
        table = pd.read_parquet(tmp_path / "out" / "tables" / "report_sentences" / f"{shard}.parquet")
        assert frame_version(table) == version, shard
    assert set(build.data_versions("report_sentences").values()) == {combined_version(sentences)}

    # 1. The ingest again over the same inputs, then again under new code versions (a refactor that keeps its
    # output): nothing downstream turns stale, at partition level (the sentences) or asset level (the patients).
    build.run(["ctrate_labels", "ctrate_reports"], tags=SHARD_RANGE)
    assert build.stale() == {}
    build.with_code_versions({"ctrate_reports", "ctrate_labels"})
    assert build.stale() == {"ctrate_labels": SHARD_RANGE_KEYS, "ctrate_reports": SHARD_RANGE_KEYS}
    build.run(["ctrate_labels", "ctrate_reports"], tags=SHARD_RANGE)
    assert build.stale() == {}

    # 2. One report changes in shard X, one label in another shard Y (a label the patients table does not hold).
    x = build.edit_report("A 17 mm nodule is seen in the left lower lobe.")
    y = build.flip_label(avoid=x)
    build.observe()
    assert build.stale() == {"ctrate_labels": [y], "ctrate_reports": [x]}
    # Rebuilt alone (as the automation does: a run per changed shard), the changed partitions get their own data
    # versions: exactly shard X's sentences turn stale, and the patients, which read every label shard.
    build.run(["ctrate_reports"], partition=x)
    build.run(["ctrate_labels"], partition=y)
    assert build.stale() == {"report_sentences": [x], "patients": [""]}
    build.run(["report_sentences"], partition=x)
    build.run(["patients"])
    assert build.stale() == {}
    changed = build.content_versions("report_sentences")
    assert {s for s in changed if changed[s] != sentences[s]} == {x}
    # An unchanged shard rebuilt alone keeps the version it had from the range run: nothing turns stale.
    z = next(s for s in SHARD_RANGE_KEYS if s not in {x, y})
    build.run(["ctrate_reports", "ctrate_labels"], partition=z)
    assert build.stale() == {}

    # 3. Dagster 1.13's limit: a range run gives all its partitions one data version (Output.data_version is per
    # step output; dagster-io/dagster#18649, #34013). Shard Y now carries its own version, the other label shards
    # the range's: an identical range run can keep no single one for all, so it gives a new one, and what reads
    # them turns stale once; after that the range shares one version again and identical range runs keep it.
    build.run(["ctrate_labels"], tags=SHARD_RANGE)
    assert build.stale() == {"patients": [""]}
    build.run(["patients"])
    build.run(["ctrate_labels"], tags=SHARD_RANGE)
    assert build.stale() == {}
    # A changed shard rebuilt inside a range gives the whole range a new version: every sentence partition of the
    # range is stale (never fewer than the changed one); the content versions still show that only X changed.
    reports_before = build.content_versions("ctrate_reports")
    build.edit_report("Mild cardiomegaly.")
    build.observe()
    build.run(["ctrate_reports"], tags=SHARD_RANGE)
    reports_after = build.content_versions("ctrate_reports")
    assert {s for s in reports_after if reports_after[s] != reports_before[s]} == {x}
    assert build.stale() == {"report_sentences": SHARD_RANGE_KEYS}
