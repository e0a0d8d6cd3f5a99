"""Quality: cross-judge scoring consistency, spatial questions, benchmark statistics."""

import base64
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import table_metadata
from assets.open_qa import enforce_failure_budget, failures_check, record_llm_stage
from rad3d_pipeline.consistency import judge_averages, pairwise_consistency
from rad3d_pipeline.embeddings import SentenceEmbedder
from rad3d_pipeline.judges import heuristic_judge_scores, minilm_scores, sample_for_consistency
from rad3d_pipeline.llm.client import Accounting, LlmClient, Outcome, run_all
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.open_qa_llm import StageResult, rejects_frame, score_candidates
from rad3d_pipeline.spatial import CATEGORIES, classify_frame, parse_spatial_judgement, write_spatial_jsonl
from rad3d_pipeline.statistics import heatmap
from resources.ctrate_source import CtrateSource
from resources.llm import LlmResource
from resources.settings import Rad3dSettings

GROUP = "quality"
ALLOW_MISSING = {"allow_missing_partitions": True}


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG shown inline in the Dagster UI's metadata panel."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _save_png(png: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"qa_candidates": AssetIn(metadata=ALLOW_MISSING)},
    pool="llm",
    check_specs=[
        AssetCheckSpec("every_judge_scored_the_sample", asset="scoring_consistency"),
        AssetCheckSpec("no_failed_llm_requests", asset="scoring_consistency"),
    ],
    description="Several judges score the same seeded, task-proportional sample (600 by default) with the "
    "Figure 17 rubric; pairwise Top-100 overlap, NDCG@100, Spearman, Kendall, MAE; judge ranking; heatmaps.",
)
def scoring_consistency(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    if qa_candidates.empty:
        raise ValueError("scoring_consistency: no candidates; materialize qa_candidates first")
    sample = sample_for_consistency(qa_candidates, settings.consistency_sample, settings.seed)
    judges = llm.judge_specs()
    if not judges:
        context.log.warning("no judges configured (RAD3D_JUDGES / RAD3D_JUDGES_FILE): nothing to compare")
        empty = pd.DataFrame(
            columns=["judge_a", "judge_b", "top100_overlap", "ndcg_at_100", "spearman", "kendall", "mae", "n"]
        )
        yield Output(empty, metadata={"judges": "none configured (set RAD3D_JUDGES)", "sample": len(sample)})
        yield AssetCheckResult(
            check_name="every_judge_scored_the_sample", passed=True, metadata={"unscored": "no judges configured"}
        )
        yield failures_check("no_failed_llm_requests", "scoring_consistency", Accounting(), {})
        return
    frames = []
    accounting = Accounting()
    clients: list[LlmClient] = []
    judged = StageResult()
    for spec in judges:
        if spec.name == "heuristic" and spec.offline:
            scores = heuristic_judge_scores(sample)
        elif spec.name == "minilm-grounding" and spec.offline:
            scores = minilm_scores(sample, SentenceEmbedder())
        else:
            client = llm.judge_client(spec, settings.out)
            clients.append(client)
            scores, result = score_candidates(client, sample)
            judged.extend(result)
            accounting.add(client.accounting)
        frames.append(scores[["qa_id", *SCORE_DIMENSIONS, "mean"]].assign(judge=spec.name))
    stage = "scoring_consistency"
    llm_meta = record_llm_stage(
        settings,
        stage,
        [],
        accounting,
        rejects_frame(judged.rejects),
        "openai" if clients else "rules",
        judged.failures,
    )
    enforce_failure_budget(stage, accounting, llm, llm_meta, clients)
    judge_scores = pd.concat(frames, ignore_index=True)[["qa_id", "judge", *SCORE_DIMENSIONS, "mean"]]
    means = judge_scores.pivot(index="qa_id", columns="judge", values="mean")[[j.name for j in judges]]
    pairs = pairwise_consistency(means)
    ranking = judge_averages(pairs) if len(pairs) else pd.DataFrame()
    reports = settings.out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    judge_scores.to_csv(reports / "judge_scores.csv", index=False)
    pairs.to_csv(reports / "scoring_consistency.csv", index=False)
    ranking.to_csv(reports / "judge_ranking.csv", index=False)
    meta: dict[str, object] = {
        "judges": ", ".join(j.name for j in judges),
        "sample": len(sample),
        "report_folder": MetadataValue.path(str(reports)),
        **llm_meta,
    }
    if len(pairs):
        spearman = pairs.pivot(index="judge_a", columns="judge_b", values="spearman")
        overlap = pairs.pivot(index="judge_a", columns="judge_b", values="top100_overlap")
        png1 = _save_png(heatmap(spearman, "Spearman's rho between judges"), reports / "consistency_spearman.png")
        png2 = _save_png(heatmap(overlap, "Top-100 overlap", "{:.0f}"), reports / "consistency_top100.png")
        metrics = ranking.set_index("judge")[["top100_overlap", "ndcg_at_100", "spearman", "kendall", "mae"]]
        png3 = _save_png(heatmap(metrics, "Each judge's average against the others"), reports / "judge_averages.png")
        meta["heatmaps"] = MetadataValue.md(
            "\n\n".join(png_markdown(p.read_bytes(), p.stem) for p in (png1, png2, png3))
        )
        meta["ranking"] = MetadataValue.md(ranking.to_markdown(index=False))
    yield Output(pairs, metadata={**table_metadata(pairs), **meta})
    counts = judge_scores.groupby("judge")["qa_id"].nunique()
    missing = {j.name: int(len(sample) - counts.get(j.name, 0)) for j in judges if counts.get(j.name, 0) < len(sample)}
    yield AssetCheckResult(
        check_name="every_judge_scored_the_sample", passed=not missing, metadata={"unscored": str(missing)}
    )
    yield failures_check("no_failed_llm_requests", stage, accounting, llm_meta)


def _llm_spatial(client: LlmClient, frame: pd.DataFrame, result: StageResult) -> pd.DataFrame:
    """The LLM judge's verdicts; a failed or unparsable verdict is a reject and a failure, never "not spatial"
    (its ``spatial`` is missing, and the row is left out of the spatial subset)."""
    template = load_template("spatial_judge")
    pairs = sorted(set(zip(frame["question"].astype(str), frame["answer"].astype(str), strict=True)))
    jobs = [
        (
            lambda q=q, a=a: client.complete_parsed(
                template.messages(Question=q, Answer=a),
                parse_spatial_judgement,
                template_version=template.template_version,
            )
        )
        for q, a in pairs
    ]
    outcomes: dict[tuple[str, str], Outcome[tuple[bool, str]]] = dict(zip(pairs, run_all(jobs, [client]), strict=True))
    rows = []
    for qa_id, q, a in zip(frame["qa_id"], frame["question"].astype(str), frame["answer"].astype(str), strict=True):
        outcome = outcomes[(q, a)]
        result.add_rejects("spatial_judge", str(qa_id), outcome, client.endpoint.model)
        if outcome.value is None:
            spatial, category, reason = None, "", f"judge failed ({outcome.error_kind}): {outcome.error}"
        else:
            spatial, category = outcome.value
            reason = "llm judge"
        rows.append(
            {"qa_id": qa_id, "spatial": spatial, "category": category, "judge": client.endpoint.model, "reason": reason}
        )
    judged = pd.DataFrame(rows, columns=["qa_id", "spatial", "category", "judge", "reason"])
    judged["spatial"] = judged["spatial"].astype("boolean")
    return judged


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"curated_qa": AssetIn(metadata=ALLOW_MISSING)},
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="spatial_qa")],
    description="Which curated QA pairs need spatial reasoning, and their category (the companion benchmark); "
    "the spatial subset as JSONL (image_path, question, answer, category) under <out>/reports/. A verdict the "
    "judge failed to give is a recorded failure (spatial missing), never 'not spatial'.",
)
def spatial_qa(
    curated_qa: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource, ctrate: CtrateSource
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    if curated_qa.empty:
        raise ValueError("spatial_qa: no curated QA; materialize curated_qa first")
    frame = curated_qa.rename(columns={"Question": "question", "Answer": "answer"})
    backend = llm.resolved_backend()
    accounting = Accounting()
    result = StageResult()
    clients: list[LlmClient] = []
    if backend == "rules":
        judged = classify_frame(frame)
    else:
        client = llm.client(llm.spatial_model, settings.out)
        clients.append(client)
        judged = _llm_spatial(client, frame, result)
        accounting.add(client.accounting)
    llm_meta = record_llm_stage(
        settings, "spatial_qa", [], accounting, rejects_frame(result.rejects), backend, result.failures
    )
    enforce_failure_budget("spatial_qa", accounting, llm, llm_meta, clients)
    merged = frame.merge(judged, on="qa_id", how="left")
    merged["spatial"] = merged["spatial"].astype("boolean")
    layout = ctrate.layout()
    merged["image_path"] = [str(layout.volume_path(v)) for v in merged["VolumeName"]]
    spatial = merged[merged["spatial"].fillna(False).astype(bool)]
    path = settings.out / "reports" / "spatial_qa.jsonl"
    written = write_spatial_jsonl(spatial, path)
    per_category = spatial["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    meta = {
        **table_metadata(merged[["qa_id", "question", "answer", "spatial", "category"]]),
        "spatial_rows": written,
        "jsonl": MetadataValue.path(str(path)),
        "judge": str(judged["judge"].iloc[0]) if len(judged) else "",
        "unjudged_rows": int(merged["spatial"].isna().sum()),
        "per_category": MetadataValue.md(per_category.rename("rows").to_frame().to_markdown()),
        **llm_meta,
    }
    columns = [
        "qa_id",
        "VolumeName",
        "split",
        "Task",
        "subtask_name",
        "question",
        "answer",
        "spatial",
        "category",
        "judge",
        "reason",
        "image_path",
    ]
    yield Output(merged[columns], metadata=meta)
    yield failures_check("no_failed_llm_requests", "spatial_qa", accounting, llm_meta)


@asset(
    group_name=GROUP,
    code_version="1",
    description="The paper's Table 2 (images, patients, QA pairs per task and split) and Figure 5: biomedical "
    "entities in the QA, organ distribution chart and per-task word clouds (PNG in the UI and <out>/reports/).",
)
def benchmark_statistics(release_export: pd.DataFrame, settings: Rad3dSettings) -> Output[pd.DataFrame]:
    from rad3d_pipeline.statistics import compute_statistics

    stats = compute_statistics(release_export, settings.seed)
    stats.write(settings.out / "reports")
    clouds = [png_markdown(png, f"wordcloud_task{task}") for task, png in stats.word_clouds.items()]
    meta = {
        **table_metadata(stats.table2, preview_rows=20),
        "entity_extractor": stats.extractor,
        "entities": len(stats.mentions),
        "organ_distribution": MetadataValue.md(png_markdown(stats.organ_png, "organs")),
        "word_clouds": MetadataValue.md("\n\n".join(clouds)),
    }
    return Output(stats.table2, metadata=meta)
