"""Quality: cross-judge scoring consistency, spatial questions, benchmark statistics."""

import base64
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from assets.metadata import table_metadata
from rad3d_pipeline.consistency import judge_averages, pairwise_consistency
from rad3d_pipeline.embeddings import SentenceEmbedder
from rad3d_pipeline.judges import heuristic_judge_scores, minilm_scores, sample_for_consistency
from rad3d_pipeline.llm.client import Accounting, Outcome, run_all
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.open_qa_llm import score_candidates
from rad3d_pipeline.spatial import CATEGORIES, classify_frame, parse_spatial_judgement, write_spatial_jsonl
from rad3d_pipeline.statistics import entity_counts, heatmap, organ_chart, table2, word_cloud
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
    check_specs=[AssetCheckSpec("every_judge_scored_the_sample", asset="scoring_consistency")],
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
        return
    frames = []
    accounting = Accounting()
    for spec in judges:
        if spec.name == "heuristic" and spec.offline:
            scores = heuristic_judge_scores(sample)
        elif spec.name == "minilm-grounding" and spec.offline:
            scores = minilm_scores(sample, SentenceEmbedder())
        else:
            client = llm.judge_client(spec, settings.out)
            scores, _ = score_candidates(client, sample)
            accounting.add(client.accounting)
        frames.append(scores[["qa_id", *SCORE_DIMENSIONS, "mean"]].assign(judge=spec.name))
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
        **{f"llm_{k}": v for k, v in accounting.as_dict().items()},
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


def _llm_spatial(llm: LlmResource, settings: Rad3dSettings, frame: pd.DataFrame) -> pd.DataFrame:
    template = load_template("spatial_judge")
    client = llm.client(llm.spatial_model, settings.out)
    pairs = sorted(set(zip(frame["question"], frame["answer"], strict=True)))
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
    for qa_id, q, a in zip(frame["qa_id"], frame["question"], frame["answer"], strict=True):
        outcome = outcomes[(q, a)]
        spatial, category = outcome.value if outcome.value else (False, "")
        reason = outcome.error or "llm judge"
        rows.append(
            {"qa_id": qa_id, "spatial": spatial, "category": category, "judge": llm.spatial_model, "reason": reason}
        )
    return pd.DataFrame(rows)


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"curated_qa": AssetIn(metadata=ALLOW_MISSING)},
    pool="llm",
    description="Which curated QA pairs need spatial reasoning, and their category (the companion benchmark); "
    "the spatial subset as JSONL (image_path, question, answer, category) under <out>/reports/.",
)
def spatial_qa(
    curated_qa: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource, ctrate: CtrateSource
) -> Output[pd.DataFrame]:
    if curated_qa.empty:
        raise ValueError("spatial_qa: no curated QA; materialize curated_qa first")
    frame = curated_qa.rename(columns={"Question": "question", "Answer": "answer"})
    offline = llm.resolved_backend() == "rules"
    judged = classify_frame(frame) if offline else _llm_spatial(llm, settings, frame)
    merged = frame.merge(judged, on="qa_id", how="left")
    layout = ctrate.layout()
    merged["image_path"] = [str(layout.volume_path(v)) for v in merged["VolumeName"]]
    spatial = merged[merged["spatial"].astype(bool)]
    path = settings.out / "reports" / "spatial_qa.jsonl"
    written = write_spatial_jsonl(spatial, path)
    per_category = spatial["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    meta = {
        **table_metadata(merged[["qa_id", "question", "answer", "spatial", "category"]]),
        "spatial_rows": written,
        "jsonl": MetadataValue.path(str(path)),
        "judge": str(judged["judge"].iloc[0]) if len(judged) else "",
        "per_category": MetadataValue.md(per_category.rename("rows").to_frame().to_markdown()),
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
    return Output(merged[columns], metadata=meta)


@asset(
    group_name=GROUP,
    code_version="1",
    description="The paper's Table 2 (images, patients, QA pairs per task and split) and Figure 5: biomedical "
    "entities in the QA, organ distribution chart and per-task word clouds (PNG in the UI and <out>/reports/).",
)
def benchmark_statistics(release_export: pd.DataFrame, settings: Rad3dSettings) -> Output[pd.DataFrame]:
    counts = table2(release_export)
    reports = settings.out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    counts.to_csv(reports / "table2.csv", index=False)
    texts = (release_export["Question"] + " " + release_export["Answer"]).tolist()
    entities, extractor = entity_counts(texts)
    entities.to_csv(reports / "entities.csv", index=False)
    chart = _save_png(organ_chart(entities, f"Organs in the QA ({extractor})"), reports / "organ_distribution.png")
    clouds = []
    for task, group in release_export.groupby("Task", sort=True):
        png = word_cloud((group["Question"] + " " + group["Answer"]).tolist(), settings.seed)
        clouds.append(_save_png(png, reports / f"wordcloud_task{task}.png"))
    meta = {
        **table_metadata(counts, preview_rows=20),
        "entity_extractor": extractor,
        "entities": len(entities),
        "organ_distribution": MetadataValue.md(png_markdown(chart.read_bytes(), "organs")),
        "word_clouds": MetadataValue.md("\n\n".join(png_markdown(p.read_bytes(), p.stem) for p in clouds)),
    }
    return Output(counts, metadata=meta)
