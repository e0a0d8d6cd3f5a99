"""``rad3d build`` as a user meets it: argument checks, one-line failures, --debug, stale outputs, the lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rad3d.cli import main
from rad3d.out_state import build_lock, write_build_record
from tests.test_cli_e2e import run_cli


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    for name in ("RAD3D_SHARDS", "RAD3D_DEBUG", "RAD3D_CTRATE_ROOT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctrate") / "ct"
    assert main(["sample-data", "--out", str(root), "--patients", "6", "--seed", "3"]) == 0
    return root


def run_main(argv: list[str]) -> int:
    """``rad3d`` in-process; argparse's own errors end in SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ctrate-root", "{tmp}/no-such-root"], "--ctrate-root {tmp}/no-such-root: folder not found"),
        (["--tasks", "7"], "--tasks '7': unknown or unavailable task(s) 7; available: 1-6"),
        (["--tasks", ","], "--tasks ',': no task given"),
        (["--split", "both"], "argument --split: invalid choice: 'both'"),
        (["--select", "no_such_asset"], "no_such_asset"),
        (["--partitions", "99"], "--partitions '99': no selected asset has the partition '99'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_create_nothing(
    tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    argv = ["build", "--ctrate-root", str(sample), "--out", str(out)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = run_main(argv)
    err = stderr_lines(capsys.readouterr().err)
    assert code == 2
    assert len(err) == 1, err
    assert expected.replace("{tmp}", str(tmp_path)) in err[0]
    assert not out.exists(), "a refused build must not create --out"


def test_out_that_is_a_file_or_unwritable(tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    assert main(["build", "--ctrate-root", str(sample), "--out", str(file)]) == 2
    assert main(["build", "--ctrate-root", str(sample), "--out", str(file / "out")]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert err == [
        f"rad3d build: --out {file}: exists and is not a folder",
        f"rad3d build: --out {file / 'out'}: {file} is a file, not a folder",
    ]


def test_unwritable_out_is_refused(
    tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount answers access(W_OK) with EROFS; root ignores modes, so the answer is simulated."""
    parent = tmp_path / "readonly"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == parent else real_access(p, mode))
    assert main(["build", "--ctrate-root", str(sample), "--out", str(parent / "out")]) == 2
    [line] = stderr_lines(capsys.readouterr().err)
    assert line == f"rad3d build: --out {parent / 'out'}: not writable ({parent} is the nearest existing folder)"
    assert not (parent / "out").exists()


def test_missing_csv_is_named_with_what_was_found(
    tmp_path: Path, sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "partial"
    (root / "dataset" / "multi_abnormality_labels").mkdir(parents=True)
    labels = sample / "dataset" / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    (root / "dataset" / "multi_abnormality_labels" / labels.name).write_bytes(labels.read_bytes())
    out = tmp_path / "out"
    code = main(["build", "--ctrate-root", str(root), "--out", str(out), "--split", "valid"])
    [line] = stderr_lines(capsys.readouterr().err)
    assert code == 2
    assert "missing metadata/validation_metadata.csv, radiology_text_reports/validation_reports.csv" in line
    assert "found: multi_abnormality_labels/valid_predicted_labels.csv" in line
    assert not out.exists()


def test_sample_data_zero_patients_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["sample-data", "--out", str(tmp_path / "s"), "--patients", "0"]) == 2
    [line] = stderr_lines(capsys.readouterr().err)
    assert "--patients: '0': must be at least 1" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_failed_asset_is_one_line_and_unaffected_assets_build(
    tmp_path: Path, sample: Path, cli_env: dict[str, str]
) -> None:
    """A reports file without its findings column stops the report assets only; --debug shows the traceback."""
    root = tmp_path / "ct"
    subprocess.run(["cp", "-r", str(sample), str(root)], check=True)
    reports = root / "dataset" / "radiology_text_reports" / "validation_reports.csv"
    lines = reports.read_text().split("\n")
    lines[0] = lines[0].replace("Findings_EN", "Findings")
    reports.write_text("\n".join(lines))
    out = tmp_path / "out"
    result = run_cli("build", "--ctrate-root", str(root), "--out", str(out), "--tasks", "1,4", env=cli_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Stack Trace" not in result.stderr
    err = stderr_lines(result.stderr)
    assert err[-1].startswith("ctrate_reports [00..15]: ") and str(reports) in err[-1] and "Findings_EN" in err[-1], err
    built = next(line for line in err if line.startswith("Built: "))
    assert "closed_qa" in built and "ctrate_labels" in built
    assert "ctrate_reports" in next(line for line in err if line.startswith("Not built: "))
    assert sorted(p.stem for p in (out / "tables" / "closed_qa").glob("*.parquet")) == ["4"]

    debug = run_cli(
        "build", "--ctrate-root", str(root), "--out", str(out), "--tasks", "1", env={**cli_env, "RAD3D_DEBUG": "1"}
    )
    assert debug.returncode == 1
    assert "Stack Trace" in debug.stderr and "assets/ctrate.py" in debug.stderr


@pytest.mark.slow
def test_selection_builds_what_it_needs(tmp_path: Path, sample: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "build", "--ctrate-root", str(sample), "--out", str(out), "--select", "report_sentences", env=cli_env
    )
    assert result.returncode == 0, result.stderr
    assert "also building ctrate_reports: needed by the selection and never built under" in result.stdout
    assert len(list((out / "tables" / "report_sentences").glob("*.parquet"))) == 16
    # Dagster's own syntax still works, and a built upstream is not rebuilt.
    again = run_cli(
        "build", "--ctrate-root", str(sample), "--out", str(out), "--select", "+report_sentences", env=cli_env
    )
    assert again.returncode == 0, again.stderr
    assert "ctrate_reports" in again.stdout and "also building" not in again.stdout


@pytest.mark.slow
def test_shard_count_change_moves_old_shards_aside(tmp_path: Path, sample: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    args = ("build", "--ctrate-root", str(sample), "--out", str(out), "--select", "volumes", "--split", "valid")
    first = run_cli(*args, env={**cli_env, "RAD3D_SHARDS": "4"})
    assert first.returncode == 0, first.stderr
    manifest = pd.concat(pd.read_parquet(p) for p in (out / "tables" / "volumes").glob("*.parquet"))
    n_volumes = len(manifest)
    assert n_volumes > 0
    second = run_cli(*args, env={**cli_env, "RAD3D_SHARDS": "2"})
    assert second.returncode == 0, second.stderr
    assert sorted(p.stem for p in (out / "tables" / "volumes").glob("*.parquet")) == ["00", "01"]
    assert "Moved 2 table(s) of shards that no longer exist" in second.stdout
    stale = sorted(p.name for p in (out / "stale").glob("*/tables/volumes/*.parquet"))
    assert stale == ["02.parquet", "03.parquet"]
    [line] = [x for x in second.stdout.splitlines() if x.startswith("Volumes ")]
    assert line.startswith(f"Volumes m3d: {n_volumes} .npy"), line


@pytest.mark.slow
def test_second_build_on_the_same_out_is_refused(tmp_path: Path, sample: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with build_lock(out, "rad3d build (the test holds the lock)"):
        result = run_cli("build", "--ctrate-root", str(sample), "--out", str(out), "--tasks", "4", env=cli_env)
    assert result.returncode == 2
    [line] = stderr_lines(result.stderr)
    assert f"--out {out}: another build is running there (pid {os.getpid()}, started " in line
    assert not (out / "tables").exists()


def test_ui_serves_the_data_and_settings_of_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rad3d ui --out DIR` points the UI at the CT-RATE root, settings and DAGSTER_HOME the build recorded."""
    out, ctrate, home = tmp_path / "out", tmp_path / "ct", tmp_path / "home"
    ctrate.mkdir()
    write_build_record(out, ctrate_root=ctrate, splits="valid", seed=7, llm="rules", dagster_home=home)
    # cmd_ui exports these for the webserver it starts: give each an undo entry so none leaks to later tests.
    for name in ("DAGSTER_HOME", "RAD3D_CTRATE_ROOT", "RAD3D_SPLIT", "RAD3D_SEED", "RAD3D_LLM", "RAD3D_OUT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    launched: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        launched.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    assert run_main(["ui", "--out", str(out)]) == 0
    [argv] = launched
    assert argv[1:4] == ["-m", "dagster", "dev"]
    workspace = Path(argv[argv.index("-w") + 1])
    assert workspace.parent == home and "location_name: rad3d" in workspace.read_text()
    assert os.environ["DAGSTER_HOME"] == str(home)
    assert os.environ["RAD3D_CTRATE_ROOT"] == str(ctrate)
    assert (os.environ["RAD3D_SPLIT"], os.environ["RAD3D_SEED"], os.environ["RAD3D_LLM"]) == ("valid", "7", "rules")
    assert os.environ["RAD3D_OUT"] == str(out)
    # --ctrate-root wins over the record.
    other = tmp_path / "other"
    other.mkdir()
    assert run_main(["ui", "--out", str(out), "--ctrate-root", str(other)]) == 0
    assert os.environ["RAD3D_CTRATE_ROOT"] == str(other)


def test_a_failed_blocking_check_stops_what_is_downstream() -> None:
    """A blocking ERROR check counts as a failure of its asset: downstream assets are not built."""
    from dagster import (
        AssetCheckResult,
        AssetCheckSpec,
        DagsterInstance,
        Definitions,
        Output,
        StaticPartitionsDefinition,
        asset,
    )

    from rad3d.build import execute_plan, plan_runs

    parts = StaticPartitionsDefinition(["x"])

    @asset(check_specs=[AssetCheckSpec("one_split", asset="upstream", blocking=True)])
    def upstream():  # type: ignore[no-untyped-def]
        yield Output(1)
        yield AssetCheckResult(check_name="one_split", passed=False, metadata={"violations": 2})

    @asset(partitions_def=parts)  # another partitioning: its own run, after the check failed
    def downstream(upstream: int) -> int:
        return upstream + 1

    defs = Definitions(assets=[upstream, downstream])
    plan = plan_runs(defs, {upstream.key, downstream.key})
    assert len(plan) == 2
    lines: list[str] = []
    report = execute_plan(defs, plan, DagsterInstance.ephemeral(), lines.append)
    assert not report.success
    assert report.built == ["upstream"] and report.not_built == ["downstream"]
    [failure] = report.failures
    assert failure.line() == "upstream: blocking check one_split failed (violations=2)"
    assert any("downstream [x]: not run (upstream upstream failed)" in line for line in lines)


def test_summary_counts_records_and_shows_the_label_report_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantine counts are records (a raw report spans lines); the cross-check's gaps are printed per split."""
    import json

    from rad3d.summary import print_summary

    out = tmp_path / "out"
    (out / "quarantine").mkdir(parents=True)
    pd.DataFrame({"source": ["r.csv", "r.csv"], "line": [3, 9], "raw": ["first line\nsecond line\nthird", "x"]}).to_csv(
        out / "quarantine" / "ctrate_reports.csv", index=False
    )
    crosscheck = {
        "valid": {"reports_without_labels": 2, "labels_without_reports": 0},
        "train": {"skipped": "train_predicted_labels.csv: file not found"},
    }
    (out / "quarantine" / "crosscheck.json").write_text(json.dumps(crosscheck))
    print_summary(out)
    printed = capsys.readouterr().out
    assert "Quarantined input rows: 2 (ctrate_reports.csv: 2)" in printed
    assert (
        "Labels against reports, valid: 2 volume(s) with a report but no labels, 0 with labels but no report" in printed
    )
    assert "Labels against reports, train: not compared (train_predicted_labels.csv: file not found)" in printed
