"""``rad3d eval``: model specs, the registry, dynamic model partitions, and the command end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from rad3d.cli import main
from rad3d_pipeline.evaluation.models.registry import (
    ModelSpec,
    ModelSpecError,
    parse_model_args,
    read_registry,
    register,
    safe_partition_name,
    spec_from_cli,
)

KNOWN = [ModelSpec("prior", "prior"), ModelSpec("random", "random"), ModelSpec("m3d-tiny", "hf_3d_vlm", {"path": "/x"})]


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# --------------------------------------------------------------------------- specs and the registry (fast)


def test_spec_forms_get_safe_partition_names(tmp_path: Path) -> None:
    folder = tmp_path / "M3D LaMed|Phi,3"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    preds = tmp_path / "radfm preds.v2.jsonl"
    preds.write_text("{}\n")
    assert spec_from_cli("prior", KNOWN) == ModelSpec("prior", "prior", {})
    assert spec_from_cli("m3d-tiny", KNOWN).kind == "hf_3d_vlm"
    openai = spec_from_cli("openai:Qwen/Qwen2.5-VL-7B-Instruct", KNOWN, model_args={"n_slices": 8})
    assert openai == ModelSpec(
        "openai-Qwen2.5-VL-7B-Instruct", "openai_vlm", {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "n_slices": 8}
    )
    assert spec_from_cli("text:gpt-4o-mini", KNOWN) == ModelSpec(
        "text-gpt-4o-mini", "text_only", {"model": "gpt-4o-mini"}
    )
    hf = spec_from_cli(f"hf:{folder}", KNOWN)
    assert hf.kind == "hf_3d_vlm" and hf.options["path"] == str(folder.resolve())
    assert hf.name == "hf-M3D-LaMed-Phi-3"
    imported = spec_from_cli(f"file:{preds.name}", KNOWN, cwd=tmp_path)
    assert imported == ModelSpec("file-radfm-preds", "import", {"path": str(preds.resolve())})
    limited = spec_from_cli("random", KNOWN, limit=5)
    assert limited == ModelSpec("random-limit5", "random", {"limit": 5})
    for spec in (openai, hf, imported, limited):
        assert all(c.isalnum() or c in "_.-" for c in spec.name), spec.name
    assert safe_partition_name("a/b|c,d e") == "a-b-c-d-e" and safe_partition_name("///") == "model"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpt:4o", "unknown spec form 'gpt'"),
        ("no-such-model", "not a known model"),
        ("file:/no/such/file.jsonl", "file /no/such/file.jsonl not found"),
        ("hf:/no/such/folder", "folder /no/such/folder not found"),
        ("openai:", "nothing after 'openai:'"),
    ],
)
def test_bad_specs_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message.replace("(", r"\(")):
        spec_from_cli(text, KNOWN)


def test_model_args_and_their_misuse() -> None:
    assert parse_model_args(["n_slices=8", "planes=[axial, coronal]", "device=cuda", "text_only=true"]) == {
        "n_slices": 8,
        "planes": ["axial", "coronal"],
        "device": "cuda",
        "text_only": True,
    }
    with pytest.raises(ModelSpecError, match="KEY=VALUE"):
        parse_model_args(["n_slices"])
    with pytest.raises(ModelSpecError, match="set by the --model spec"):
        parse_model_args(["path=/x"])
    with pytest.raises(ModelSpecError, match="--model-arg applies to"):
        spec_from_cli("prior", KNOWN, model_args={"n_slices": 8})


def test_registry_is_atomic_refuses_a_second_meaning_and_feeds_the_resource(tmp_path: Path) -> None:
    from resources.models import ModelsResource

    preds = tmp_path / "p.jsonl"
    preds.write_text("{}\n")
    spec = spec_from_cli(f"file:{preds}", KNOWN)
    path = register(tmp_path, [spec])
    assert json.loads(path.read_text())["models"][0]["kind"] == "import"
    assert not list(path.parent.glob(".*tmp*"))
    assert read_registry(tmp_path) == [spec]
    register(tmp_path, [spec])  # the same meaning again: fine
    with pytest.raises(ModelSpecError, match="already registered"):
        register(tmp_path, [ModelSpec(spec.name, "import", {"path": "/elsewhere.jsonl"})])
    with pytest.raises(ModelSpecError, match="already configured"):
        register(tmp_path, [ModelSpec("prior", "import", {"path": str(preds)})], [ModelSpec("prior", "prior")])
    resource = ModelsResource(names="prior,random", registry_dir=str(tmp_path))
    assert resource.partition_keys() == ["prior", "random", spec.name]
    assert resource.spec(spec.name).options["path"] == str(preds.resolve())
    assert ModelsResource(names="prior").partition_keys() == ["prior"]  # no registry: configured models only
    path.write_text("{not json")
    with pytest.raises(ModelSpecError, match="not valid JSON"):
        resource.specs()


def test_planner_resolves_models_from_a_planned_store(tmp_path: Path) -> None:
    from dagster import AssetKey

    from rad3d.build import PlannedDynamicPartitions, partition_filter, plan_runs
    from rad3d.definitions import build_definitions

    defs = build_definitions(out_dir=str(tmp_path))
    selected = {AssetKey("predictions")}
    store = PlannedDynamicPartitions({"models": ["prior", "random", "file-x"]})
    [run] = plan_runs(defs, selected, None, store)
    assert run.describe() == "predictions [prior|1..file-x|6]" and len(run.partition_keys) == 18
    only = plan_runs(defs, selected, partition_filter(defs, selected, "file-x", store), store)
    assert [r.describe() for r in only] == ["predictions [file-x|1..file-x|6]"]
    assert plan_runs(defs, selected, None, PlannedDynamicPartitions({})) == []  # no model: nothing to run


# --------------------------------------------------------------------------- command-line errors (one line, exit 2)


@pytest.fixture
def fake_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    (out / "tables" / "release_export").mkdir(parents=True)
    (out / "tables" / "release_export" / "all.parquet").write_bytes(b"")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    return out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "gpt:4o"], "unknown spec form 'gpt'"),
        (["--model", "file:/no/such.jsonl"], "file /no/such.jsonl not found"),
        (["--model", "hf:/no/such/folder"], "folder /no/such/folder not found"),
        (["--model", "prior", "--tasks", "7"], "--tasks '7': unknown or unavailable task(s) 7"),
        (["--model", "prior", "--limit", "0"], "argument --limit: '0': must be at least 1"),
        (["--model", "openai:x", "--model-arg", "oops"], "--model-arg 'oops': use KEY=VALUE"),
    ],
)
def test_errors_are_one_line_exit_2_and_write_nothing(
    fake_benchmark: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert run_main(["eval", "--out", str(fake_benchmark), *extra]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_no_benchmark_says_how_to_build_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    assert run_main(["eval", "--model", "prior", "--out", str(out)]) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "no benchmark built there" in line and f"rad3d build --ctrate-root <CT-RATE folder> --out {out}" in line
    assert not out.exists()


# --------------------------------------------------------------------------- end to end on the sample build (slow)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sample build of the benchmark and the m3d volumes, its own DAGSTER_HOME; BERTScore off (speed)."""
    tmp = tmp_path_factory.mktemp("eval")
    saved = dict(os.environ)
    os.environ.update({"DAGSTER_HOME": str(tmp / "dh"), "RAD3D_BERTSCORE": "0"})
    for name in ("RAD3D_SHARDS", "RAD3D_MODELS", "RAD3D_MODELS_FILE", "RAD3D_DEBUG", "OPENAI_BASE_URL"):
        os.environ.pop(name, None)
    try:
        assert main(["sample-data", "--out", str(tmp / "ct"), "--patients", "8", "--seed", "3"]) == 0
        select = "+key:release_export or +key:volumes"
        args = ["build", "--ctrate-root", str(tmp / "ct"), "--out", str(tmp / "out"), "--select", select, "--quiet"]
        assert main(args) == 0
        yield tmp / "out"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _materializations(partition: str) -> int:
    from dagster import AssetKey, DagsterInstance

    instance = DagsterInstance.get()
    records = instance.fetch_materializations(AssetKey("predictions"), limit=10_000).records
    return sum(1 for r in records if r.partition_key == partition)


@pytest.mark.slow
def test_eval_two_baselines_then_an_import_without_recomputing(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dagster import DagsterInstance

    assert main(["eval", "--model", "prior", "--model", "random", "--out", str(built), "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = printed.split("Table 4", 1)[1]
    assert "| prior " in table and "| random " in table
    for task in range(1, 7):
        assert f"Task{task} " in table and f"Task {task} " in printed
    assert "Rank under" in printed and "prior: " in printed
    # Intervals in the printed rows ("value [low, high]").
    assert "[" in table.split("| prior ", 1)[1].splitlines()[0]
    board = pd.read_csv(built / "reports" / "leaderboard" / "table4.csv").set_index("Model")
    assert {"prior", "random"} <= set(board.index)
    # What the UI reads: the instance's dynamic partitions, without reloading any definitions.
    instance = DagsterInstance.get()
    assert {"prior", "random"} <= set(instance.get_dynamic_partitions("models"))
    runs = instance.get_runs()
    assert any(r.tags.get("rad3d/stage", "").startswith("predictions [prior|1") for r in runs)
    counts = {p: _materializations(p) for p in ("prior|4", "random|1")}
    n_runs = len(runs)

    # A predictions file from the first model, imported as a third model.
    prior = pd.concat(pd.read_parquet(p) for p in (built / "tables" / "predictions").glob("prior|*.parquet"))
    file = built.parent / "prior_copy.jsonl"
    with file.open("w") as handle:
        for row in prior.to_dict("records"):
            record = {"VolumeName": row["VolumeName"], "question": row["Question"], "prediction": row["prediction"]}
            handle.write(json.dumps(record) + "\n")
    assert main(["eval", "--model", f"file:{file}", "--out", str(built), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "file-prior_copy" in printed and "new model partition(s): file-prior_copy" in printed
    assert "file-prior_copy" in set(instance.get_dynamic_partitions("models"))
    assert {p: _materializations(p) for p in counts} == counts  # the first two were not recomputed
    assert len(instance.get_runs()) == n_runs + 3  # predictions, metrics, leaderboard
    board = pd.read_csv(built / "reports" / "leaderboard" / "table4.csv", dtype=str).set_index("Model")
    assert {"prior", "random", "file-prior_copy"} <= set(board.index)
    # The same answers give the same figures.
    assert board.loc["file-prior_copy", "Task4 Acc"] == board.loc["prior", "Task4 Acc"]
    registry = json.loads((built / "models" / "registry.json").read_text())
    assert [m["name"] for m in registry["models"]] == ["file-prior_copy"]

    # --limit: a separate, labelled model with the first N questions per subtask.
    assert main(["eval", "--model", "random", "--limit", "1", "--tasks", "4", "--out", str(built), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "random-limit1" in printed and "first 1 question(s) per subtask" in printed
    limited = pd.read_parquet(built / "tables" / "predictions" / "random-limit1|4.parquet")
    assert len(limited) == limited["Subtask"].nunique() and len(limited) > 1
    assert (
        "random-limit1: the first 1 questions per subtask only"
        in (built / "reports" / "leaderboard" / "table4.md").read_text()
    )
    assert "random-limit1" in set(instance.get_dynamic_partitions("models"))


@pytest.mark.slow
def test_openai_and_text_specs_against_the_local_server(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.llm_server import LocalLlmServer

    with LocalLlmServer() as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        try:
            args = ["eval", "--model", "openai:qwen-vl", "--model", "text:qwen-vl", "--out", str(built)]
            code = main([*args, "--tasks", "4", "--limit", "1", "--model-arg", "n_slices=4", "--quiet"])
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)
        bodies = list(server.state.bodies)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "openai-qwen-vl-limit1" in printed and "text-qwen-vl-limit1" in printed
    with_images = [b for b in bodies if isinstance(b["messages"][-1]["content"], list)]
    text_only = [b for b in bodies if isinstance(b["messages"][-1]["content"], str)]
    n = len(pd.read_parquet(built / "tables" / "predictions" / "openai-qwen-vl-limit1|4.parquet"))
    assert len(with_images) == n and len(text_only) == n  # the vision model got its montages, the text one none
    parts = with_images[0]["messages"][-1]["content"]
    assert sum(p["type"] == "image_url" for p in parts) == 1  # one plane (axial), n_slices from --model-arg
    registry = {m["name"]: m for m in json.loads((built / "models" / "registry.json").read_text())["models"]}
    assert registry["openai-qwen-vl-limit1"]["options"] == {"model": "qwen-vl", "n_slices": 4, "limit": 1}


@pytest.mark.slow
def test_hf_spec_with_the_tiny_trust_remote_code_model(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from tests.conftest import skip_or_fail
    from tests.tiny_m3d import write_tiny_m3d

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        skip_or_fail("transformers/torch not installed (the hf: adapter needs them)")

    folder = write_tiny_m3d(built.parent / "tiny_m3d_model")
    args = ["eval", "--model", f"hf:{folder}", "--out", str(built), "--tasks", "4", "--limit", "1"]
    code = main([*args, "--model-arg", "proj_out_num=8", "--model-arg", "max_new_tokens=4", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = pd.read_parquet(built / "tables" / "predictions" / "hf-tiny_m3d_model-limit1|4.parquet")
    assert len(table) > 0 and all(len(str(p).split()) == 4 for p in table["prediction"])


def test_leaderboard_reads_the_per_question_scores_of_metric_tables(tmp_path: Path) -> None:
    from assets.evaluation import SCORE_KEYS, per_question_scores, scores_path
    from rad3d_pipeline.evaluation.metrics import SAMPLE_METRICS

    preds = pd.DataFrame(
        {
            "model": ["a", "a", "b"],
            "Task": [4, 4, 4],
            "Subtask": [1, 2, 1],
            "VolumeName": ["v1", "v2", "v1"],
            "Question": ["q1", "q2", "q1"],
        }
    )
    for model, bert in (("a", [0.9, 0.8]), ("b", [0.1])):
        rows = preds[preds["model"] == model][list(SCORE_KEYS)].reset_index(drop=True)
        scores = pd.DataFrame({m: float("nan") for m in SAMPLE_METRICS}, index=rows.index)
        scores["bertscore_f1"] = bert
        path = scores_path(tmp_path, model, 4)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([rows, scores], axis=1).to_parquet(path)
    shuffled = preds.iloc[[2, 0, 1]]
    found, why = per_question_scores(tmp_path, shuffled)
    assert why == "" and found is not None
    assert found.loc[shuffled.index, "bertscore_f1"].tolist() == [0.1, 0.9, 0.8]
    found, why = per_question_scores(tmp_path, preds.assign(Question=["q1", "other", "q1"]))
    assert found is None and "does not match the predictions of a task 4" in why
    found, why = per_question_scores(tmp_path, preds.assign(model="c"))
    assert found is None and "no per-question scores" in why
