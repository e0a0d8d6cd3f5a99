"""``rad3d eval``: evaluate one or more models on the benchmark built under ``--out``, through Dagster.

    rad3d eval --model prior --model random --out data
    rad3d eval --model openai:gpt-4o-mini --model hf:/models/M3D-LaMed-Phi-3-4B --out data --tasks 4,5,6
    rad3d eval --model file:radfm_predictions.jsonl --out data --limit 20

Each ``--model`` spec becomes a model with a safe partition name (``openai-gpt-4o-mini``,
``hf-M3D-LaMed-Phi-3-4B``, ``file-radfm_predictions``; ``-limitN`` with ``--limit N``), recorded
with its kind and options in ``<out>/models/registry.json`` and added to the instance's dynamic
partitions ``models``, so the UI shows it without a restart and later builds know what it means.
``predictions``, ``metric_tables``, ``clinical_metrics`` and the ``leaderboard`` are materialized
through Dagster (the same planner as ``rad3d build``: the runs show in the UI with their
``rad3d/stage`` tag); a killed run resumes from the predictions' batch checkpoints. At the end it
prints the models' Table 4 rows with their 95% bootstrap intervals, the per-task results and the
rank among every model evaluated under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rad3d.arguments import positive_int
from rad3d_pipeline.common.tasks import TASK_NAMES

if TYPE_CHECKING:
    import pandas as pd

EVAL_ASSETS = ("predictions", "metric_tables", "clinical_metrics", "leaderboard")
TASK_TITLES = TASK_NAMES


def benchmark_file(out: Path) -> Path:
    """The release table the predictions asset reads (``release_export``)."""
    return out / "tables" / "release_export" / "all.parquet"


def headline_column(table: pd.DataFrame, task: int) -> str | None:
    """Table 4's headline column of a task: Acc (closed); BERTScore, else ROUGE where BERTScore is off (open)."""
    for label in ("Acc", "BERTScore", "ROUGE"):
        column = f"Task{task} {label}"
        if column in table.columns and table[column].notna().any():
            return column
    return None


def ranks(values: pd.Series) -> pd.Series:
    """1 = best; models without a value have no rank; ties share the better rank."""
    return values.rank(ascending=False, method="min")


def results_text(out: Path, models: list[str], tasks: list[int]) -> list[str]:
    """The lines printed at the end: Table 4 rows (with intervals), per-task results, ranks under ``out``."""
    import pandas as pd

    folder = out / "reports" / "leaderboard"
    numeric = pd.read_parquet(out / "tables" / "leaderboard" / "all.parquet").set_index("Model")
    shown = pd.read_csv(folder / "table4.csv", dtype=str, keep_default_na=False).set_index("Model")
    numeric.index = numeric.index.astype(str)
    missing = [m for m in models if m not in numeric.index]
    if missing:
        raise RuntimeError(f"{folder / 'table4.csv'}: no row for {', '.join(missing)}")
    columns = [
        c
        for c in shown.columns
        if c.split(" ", 1)[0].removeprefix("Task").isdigit()
        and int(c.split(" ", 1)[0].removeprefix("Task")) in tasks
        and not c.endswith(" strict")
    ]
    lines = [f"Table 4 (percent, macro-averaged over subtasks; [95% bootstrap interval]) from {folder / 'table4.md'}:"]
    lines.append(shown.loc[models, columns].to_markdown())
    lines.append("")
    lines.append("Per task (headline metric; rank among the models evaluated under --out):")
    total = len(numeric)
    headline: dict[int, str] = {}
    for task in tasks:
        column = headline_column(numeric, task)
        if column is None:
            lines.append(f"  Task {task} {TASK_TITLES[task]}: no results")
            continue
        headline[task] = column
        order = ranks(numeric[column])
        label = column.split(" ", 1)[1]
        strict = f"{column} strict"
        cells = []
        for model in models:
            value = shown.loc[model, column] if column in shown.columns else ""
            if not value:
                cells.append(f"{model} n/a")
                continue
            rank = order.get(model)
            place = f" (rank {int(rank)}/{int(order.notna().sum())})" if rank is not None and rank == rank else ""
            extra = (
                f", strict {shown.loc[model, strict]}" if strict in shown.columns and shown.loc[model, strict] else ""
            )
            cells.append(f"{model} {value}{extra}{place}")
        lines.append(f"  Task {task} {TASK_TITLES[task]} ({label}): " + "; ".join(cells))
    if headline:
        mean = numeric[list(headline.values())].mean(axis=1, skipna=False)
        order = ranks(mean)
        rated = int(order.notna().sum())
        names = ", ".join(str(t) for t in headline)
        lines.append("")
        lines.append(f"Rank under {out} (mean of the headline figures of tasks {names}; {total} model(s) evaluated):")
        for model in models:
            rank = order.get(model)
            if rank is None or rank != rank:
                lines.append(f"  {model}: no rank (not evaluated on every one of these tasks)")
            else:
                lines.append(f"  {model}: {int(rank)} of {rated} (mean {mean[model]:.1f})")
    lines.append("")
    lines.append(f"Intervals: {folder / 'intervals.csv'}; pairwise tests: {folder / 'pairwise.md'}")
    return lines


def cmd_eval(args: argparse.Namespace) -> int:
    from rad3d.preflight import UsageError, check_out_dir, parse_tasks
    from rad3d_pipeline.evaluation.models.registry import ModelSpecError, parse_model_args, spec_from_cli

    out = Path(args.out).expanduser().absolute()
    tasks = [int(t) for t in (parse_tasks(args.tasks) or ["1", "2", "3", "4", "5", "6"])]
    try:
        model_args = parse_model_args(args.model_arg or [])
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from None
    if out.exists():
        check_out_dir(out)
    if not benchmark_file(out).is_file():
        raise UsageError(
            f"--out {out}: no benchmark built there; build it first: rad3d build --ctrate-root <CT-RATE folder> "
            f"--out {out}"
        )

    from rad3d.out_state import read_build_record

    record = read_build_record(out)
    if record.get("dagster_home") and not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(record["dagster_home"])
    os.environ["RAD3D_OUT"] = str(out)

    from assets.evaluation import MODELS_PARTITIONS, split_prediction_key
    from rad3d.build import PlannedDynamicPartitions, add_dynamic_partitions, execute_plan, plan_runs
    from rad3d.definitions import build_definitions

    seed = record.get("seed")
    defs = build_definitions(
        ctrate_root=str(record["ctrate_root"]) if record.get("ctrate_root") else None,
        out_dir=str(out),
        splits=str(record["splits"]) if record.get("splits") else None,
        seed=int(str(seed)) if seed is not None else None,
        llm_backend=str(record["llm"]) if record.get("llm") else None,
    )
    resource: Any = dict(defs.resources or {})["models"]
    try:
        configured = resource.configured()
        known = resource.specs()
        specs = [
            spec_from_cli(text, known, model_args=model_args, limit=args.limit, cwd=Path.cwd()) for text in args.model
        ]
    except (ModelSpecError, FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    specs = list({s.name: s for s in specs}.values())
    names = [s.name for s in specs]
    configured_names = {s.name for s in configured}
    every = list(dict.fromkeys([*(s.name for s in known), *names]))
    store = PlannedDynamicPartitions({MODELS_PARTITIONS: every})
    selected = {key for key in defs.resolve_asset_graph().materializable_asset_keys if key.path[-1] in EVAL_ASSETS}
    wanted_tasks = set(tasks)

    def keep(key: object, partition: str) -> bool:
        model, task = split_prediction_key(partition)
        return model in names and task in wanted_tasks

    plan = plan_runs(defs, selected, keep, store)

    # Checks passed: from here on the command writes.
    from rad3d.cli import show_progress
    from rad3d.instance import get_instance
    from rad3d.out_state import build_lock
    from rad3d_pipeline.evaluation.models.registry import register

    with build_lock(out, " ".join(sys.argv)):
        try:
            register(out, [s for s in specs if s.name not in configured_names], configured)
        except ModelSpecError as exc:
            raise UsageError(str(exc)) from None
        instance = get_instance(out)
        added = add_dynamic_partitions(instance, store).get(MODELS_PARTITIONS, [])
        scope = f"tasks {','.join(str(t) for t in tasks)}"
        limit = f", first {args.limit} question(s) per subtask" if args.limit else ""
        home = os.environ["DAGSTER_HOME"]
        print(f"rad3d eval: {', '.join(names)} on {scope}{limit}; {len(plan)} run(s), DAGSTER_HOME={home}")
        if added:
            print(f"  new model partition(s): {', '.join(added)}")
        if not args.quiet:
            show_progress()
        report = execute_plan(defs, plan, instance, debug=args.debug)
    if not report.success:
        if args.debug:
            for failure in report.failures:
                print(failure.detail, file=sys.stderr)
        runs = ", ".join(sorted({f.run_id[:8] for f in report.failures}))
        print(f"rad3d eval failed ({len(report.failures)} failed step(s), run(s) {runs}):", file=sys.stderr)
        for failure in report.failures:
            print(failure.line(), file=sys.stderr)
        not_built = ", ".join(dict.fromkeys(report.not_built))
        if not_built:
            print(f"Not built: {not_built}", file=sys.stderr)
        return 1
    print()
    for line in results_text(out, names, tasks):
        print(line)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="evaluate model(s) on the benchmark built under --out (through Dagster) and print Table 4 with intervals",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="SPEC",
        help="a model name (prior, random, a name from RAD3D_MODELS_FILE), openai:<model> (OPENAI_BASE_URL), "
        "text:<model> (text only), hf:<local folder> (trust_remote_code 3D VLM) or file:<predictions file>; "
        "repeatable",
    )
    parser.add_argument("--out", required=True, help="data root of a build (its benchmark, instance and leaderboard)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks, e.g. 4,5,6 (default 1-6)")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="only the first N questions per subtask (a quick check; the model's name gets a -limitN suffix)",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an adapter option for the openai:/text:/hf:/file: specs, e.g. n_slices=8, device=cuda; repeatable",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("RAD3D_DEBUG", "") not in ("", "0"),
        help="print the run log and the tracebacks of failed steps (also RAD3D_DEBUG=1)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=cmd_eval)
    return parser
