"""The ``rad3d`` command line: sample-data, build, ui."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rad3d.arguments import positive_int

if TYPE_CHECKING:
    import pandas as pd
    from dagster import AssetKey

DEFAULT_OUT = "data"
# Assets that produce each task's QA; --tasks selects them and their task partitions.
TASK_ASSETS: dict[str, tuple[str, ...]] = {t: ("curated_qa", "scoring_consistency", "spatial_qa") for t in "123"} | {
    t: ("closed_qa",) for t in "456"
}
# Assets whose partitions are (or include) the task: --tasks keeps only those partitions.
TASK_PARTITIONED_ASSETS = {"closed_qa", "curated_qa", "qa_candidates", "qa_scores"}


def _volume_size(value: str) -> str | tuple[int, int, int]:
    if value in ("small", "full", "none"):
        return value
    try:
        depth, height, width = (int(n) for n in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: use small, full, none or DxHxW such as 140x512x512") from None
    return depth, height, width


def cmd_sample_data(args: argparse.Namespace) -> int:
    from rad3d_pipeline.synthetic.sample_data import write_sample_dataset

    writer = None
    if args.volumes != "none":
        from rad3d_pipeline.synthetic.phantoms import PhantomWriter

        writer = PhantomWriter(size=args.volumes, version=args.ctrate_version)
    summary = write_sample_dataset(Path(args.out), patients=args.patients, seed=args.seed, volume_writer=writer)
    print(f"Wrote a synthetic CT-RATE sample to {summary.root}")
    for split in sorted(summary.patients):
        print(f"  {split}: {summary.patients[split]} patients, {summary.volumes[split]} volumes")
    if writer is not None:
        print(f"  volumes: NIfTI phantoms ({args.volumes}, CT-RATE {args.ctrate_version} intensities)")
    return 0


def show_progress() -> None:
    """Print the core's progress records (volumes n/N, LLM requests n/N, ...) under the run lines."""
    import logging

    from rad3d_pipeline.common.progress import LOGGER_NAME, TerminalProgress

    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, TerminalProgress) for h in logger.handlers):
        logger.addHandler(TerminalProgress(lambda line: print(line, flush=True)))
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _default_select(tasks: list[str] | None) -> str | None:
    if tasks is None:
        return None
    names = sorted({name for t in tasks for name in TASK_ASSETS[t]})
    return " or ".join(f"+key:{name}" for name in names) + " or key:release_export or key:benchmark_statistics"


def task_of(partitions_def: object, partition: str) -> str:
    """The task of a task-partitioned asset's partition key: the key itself, or its ``task`` dimension."""
    from dagster import MultiPartitionsDefinition

    from rad3d.build import dimension_values

    if isinstance(partitions_def, MultiPartitionsDefinition):
        return dimension_values(partitions_def, partition)["task"]
    return partition


def cmd_build(args: argparse.Namespace) -> int:
    from rad3d.preflight import UsageError, check_ctrate_root, check_out_dir, parse_tasks

    out = Path(args.out).expanduser().absolute()
    tasks = parse_tasks(args.tasks)
    check_out_dir(out)
    if not Path(args.ctrate_root).exists():  # before the definitions load: one line, nothing created
        raise UsageError(f"--ctrate-root {args.ctrate_root}: folder not found")

    from rad3d.build import (
        BuildError,
        add_dynamic_partitions,
        add_missing_upstream,
        configured_dynamic_partitions,
        execute_plan,
        observe_sources,
        partition_filter,
        plan_runs,
        resolve_selection,
    )
    from rad3d.definitions import build_definitions

    os.environ["RAD3D_OUT"] = str(out)
    defs = build_definitions(
        ctrate_root=args.ctrate_root, out_dir=str(out), splits=args.split, seed=args.seed, llm_backend=args.llm
    )
    select = args.select if args.select is not None else _default_select(tasks)
    try:
        selected = resolve_selection(defs, select)
    except BuildError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # a malformed selection string
        raise UsageError(f"--select {select!r}: {exc}") from None
    added = add_missing_upstream(defs, selected, out)
    check_ctrate_root(Path(args.ctrate_root), args.split, {k.to_user_string() for k in selected})
    # The models (configured, and registered under --out by `rad3d eval`) are dynamic partitions: planned
    # from here, added to the instance once it exists.
    models = configured_dynamic_partitions(defs)
    try:
        in_range = partition_filter(defs, selected, args.partitions, models) if args.partitions else None
    except BuildError as exc:
        raise UsageError(str(exc)) from None

    graph = defs.resolve_asset_graph()

    def keep(key: AssetKey, partition: str) -> bool:
        if in_range is not None and not in_range(key, partition):
            return False
        if tasks is None or key.to_user_string() not in TASK_PARTITIONED_ASSETS:
            return True
        return task_of(graph.get(key).partitions_def, partition) in tasks

    plan = plan_runs(defs, selected, keep, models)
    if args.plan:  # what the LLM stages of this selection would send and cost: nothing sent, nothing built
        from rad3d.plan_command import print_plan

        return print_plan(defs, plan, out)

    # Checks passed: from here on the build writes.
    from assets.partitions import shard_partitions
    from rad3d.instance import get_instance
    from rad3d.out_state import build_lock, move_stale_partition_tables, write_build_record
    from rad3d.summary import print_summary

    out.mkdir(parents=True, exist_ok=True)
    if not args.quiet:
        show_progress()
    with build_lock(out, " ".join(sys.argv)):
        instance = get_instance(out)
        add_dynamic_partitions(instance, models)
        write_build_record(
            out,
            ctrate_root=Path(args.ctrate_root).expanduser().absolute(),
            splits=args.split,
            seed=args.seed,
            llm=args.llm,
            dagster_home=Path(os.environ["DAGSTER_HOME"]),
        )
        moved = move_stale_partition_tables(defs, out, shard_partitions, models)
        if moved:
            print(f"Moved {len(moved)} table(s) of shards that no longer exist to {moved[0].parents[2]}")
        print(f"rad3d build: {len(plan)} run(s), DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
        if added:
            names = ", ".join(k.to_user_string() for k in added)
            print(f"  also building {names}: needed by the selection and never built under {out}")
        observe_sources(defs, instance, debug=args.debug, selected=selected)
        report = execute_plan(defs, plan, instance, debug=args.debug)
        if report.success:
            print_summary(out)
            return 0
        if args.debug:
            for failure in report.failures:
                print(failure.detail, file=sys.stderr)
        built = ", ".join(dict.fromkeys(report.built)) or "nothing"
        not_built = ", ".join(dict.fromkeys(report.not_built))
        print(f"Built: {built}", file=sys.stderr)
        print(f"Not built: {not_built}", file=sys.stderr)
        runs = ", ".join(sorted({f.run_id[:8] for f in report.failures}))
        hint = "" if args.debug else "; tracebacks: --debug or the runs in the UI"
        print(f"rad3d build failed ({len(report.failures)} failed step(s), run(s) {runs}{hint}):", file=sys.stderr)
        for failure in report.failures:
            print(failure.line(), file=sys.stderr)
        return 1


def _read_table(out: Path, asset: str) -> pd.DataFrame:
    import pandas as pd

    folder = out / "tables" / asset
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"rad3d: {folder}: no table; run rad3d build first")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def cmd_review_export(args: argparse.Namespace) -> int:
    from rad3d_pipeline.quality.review import build_review_sheet, write_review_sheet

    out = Path(args.out)
    curated = _read_table(out, "curated_qa")
    reports = _read_table(out, "ctrate_reports")
    sheet = build_review_sheet(curated, reports, n=args.n, seed=args.seed)
    path = Path(args.sheet) if args.sheet else out / "reports" / "review_sheet.csv"
    rubric = write_review_sheet(sheet, path)
    print(f"Review sheet with {len(sheet)} QA pairs: {path}\nRubric: {rubric}")
    print("Fill the five score columns (0-5) and 'consistent' (1/0), then: rad3d review import FILLED.csv")
    return 0


def cmd_review_import(args: argparse.Namespace) -> int:
    from rad3d_pipeline.quality.review import ReviewSheetError, agreement_table, read_filled_sheet

    try:
        filled = read_filled_sheet(Path(args.sheet))
    except ReviewSheetError as exc:
        print(f"rad3d review import: {exc}", file=sys.stderr)
        return 2
    table = agreement_table(filled, args.min_dimension, args.min_mean)
    out = Path(args.out) / "reports" / "human_agreement.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
    print(f"\nWritten to {out}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster UI (webserver and daemon) on the data, settings and instance of the build under --out."""
    from rad3d.instance import resolve_dagster_home
    from rad3d.out_state import read_build_record, ui_workspace

    out = Path(args.out).expanduser().absolute()
    record = read_build_record(out)
    if record.get("dagster_home") and not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(record["dagster_home"])
    ctrate_root = str(
        args.ctrate_root or record.get("ctrate_root") or os.environ.get("RAD3D_CTRATE_ROOT") or out / "sample_ctrate"
    )
    if not Path(ctrate_root).is_dir():
        print(
            f"note: CT-RATE root {ctrate_root} not found; ingest runs from the UI will fail until you pass "
            f"--ctrate-root (or build under --out {out} first)",
            file=sys.stderr,
        )
    os.environ["RAD3D_OUT"] = str(out)
    os.environ["RAD3D_CTRATE_ROOT"] = str(Path(ctrate_root).absolute())
    for key, variable in (("splits", "RAD3D_SPLIT"), ("seed", "RAD3D_SEED"), ("llm", "RAD3D_LLM")):
        if record.get(key) is not None and variable not in os.environ:
            os.environ[variable] = str(record[key])
    home = resolve_dagster_home(out)
    workspace = ui_workspace(home)
    # `dagster dev` (webserver + daemon) from this interpreter, so an unactivated .venv/bin/rad3d works.
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "--host", args.host]
    cmd += ["--port", str(args.port)]
    print(f"Dagster UI at http://{args.host}:{args.port}", flush=True)
    print(f"  data {out}, CT-RATE {os.environ['RAD3D_CTRATE_ROOT']}, DAGSTER_HOME={home}", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (``rad3d build: argument --split: ...; see --help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rad3d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample-data", help="write a synthetic CT-RATE-shaped data set")
    sample.add_argument("--out", required=True, help="folder to write (CT-RATE layout with dataset/)")
    sample.add_argument(
        "--patients", type=positive_int, default=40, help="number of patients over both splits (default 40)"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--volumes",
        type=_volume_size,
        default="small",
        help="NIfTI phantoms: small (80x80 in-plane, 32-40 slices; default), full (512x512x300), "
        "DxHxW (e.g. 140x512x512) or none",
    )
    sample.add_argument(
        "--ctrate-version",
        choices=["v1", "v2"],
        default="v1",
        help="stored intensities: v1 = DICOM values (HU via the metadata slope/intercept; default), v2 = HU",
    )
    sample.set_defaults(func=cmd_sample_data)

    build = sub.add_parser("build", help="materialize the asset graph (every partition) and export the release")
    build.add_argument("--ctrate-root", required=True, help="CT-RATE root (with or without dataset/)")
    build.add_argument(
        "--out", default=DEFAULT_OUT, help=f"data root for tables and the release (default {DEFAULT_OUT})"
    )
    build.add_argument("--split", default="all", choices=["valid", "train", "all"], help="CT-RATE splits (default all)")
    build.add_argument("--tasks", default=None, help="comma-separated tasks, e.g. 4,5,6 (default: everything)")
    build.add_argument(
        "--select", default=None, help="Dagster asset selection, e.g. 'report_sentences' or 'group:ctrate'"
    )
    build.add_argument(
        "--partitions",
        default=None,
        help="partition keys or START...END ranges, comma-separated, e.g. 00...03 (shards) or prior (a model)",
    )
    build.add_argument("--seed", type=int, default=0, help="seed of template shuffles and samples (default 0)")
    build.add_argument(
        "--llm",
        default=None,
        choices=["rules", "openai", "auto"],
        help="Tasks 1-3 backend: rules (offline) or openai (OPENAI_BASE_URL / OPENAI_API_KEY); default auto",
    )
    build.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("RAD3D_DEBUG", "") not in ("", "0"),
        help="print the run log and the tracebacks of failed steps (also RAD3D_DEBUG=1)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress lines inside long stages")
    build.add_argument(
        "--plan",
        action="store_true",
        help="send no request and build nothing: print (and write to <out>/reports/plan.json) what the LLM "
        "stages of this selection would send and cost, estimates marked (docs/plan.md)",
    )
    build.set_defaults(func=cmd_build)

    review = sub.add_parser("review", help="human validation: export a review sheet, import the filled sheet")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    export = review_sub.add_parser("export", help="a seeded sample of curated QA with reports and a blank rubric")
    export.add_argument("--out", default=DEFAULT_OUT, help=f"data root of a build (default {DEFAULT_OUT})")
    export.add_argument("--n", type=int, default=600, help="QA pairs in the sheet (default 600, as the paper)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--sheet", default=None, help="where to write (default <out>/reports/review_sheet.csv)")
    export.set_defaults(func=cmd_review_export)
    imp = review_sub.add_parser("import", help="the agreement table from a filled sheet")
    imp.add_argument("sheet", help="the filled review sheet (CSV)")
    imp.add_argument("--out", default=DEFAULT_OUT, help=f"data root (default {DEFAULT_OUT})")
    imp.add_argument("--min-dimension", type=float, default=3.0, help="score filter: every dimension at least")
    imp.add_argument("--min-mean", type=float, default=3.0, help="score filter: mean at least")
    imp.set_defaults(func=cmd_review_import)

    from rad3d import eval_command, evaluate_command

    evaluate_command.add_parser(sub)
    eval_command.add_parser(sub)
    from rad3d import ops_command

    ops_command.add_parser(sub)

    ui = sub.add_parser("ui", help="start the Dagster UI on this project with the project's DAGSTER_HOME")
    ui.add_argument("--out", default=DEFAULT_OUT, help=f"data root of a build (default {DEFAULT_OUT})")
    ui.add_argument(
        "--ctrate-root",
        default=None,
        help="CT-RATE root for materializations from the UI (default: the one the last build under --out used)",
    )
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rad3d_pipeline.common.errors import UserFacingError

    warnings.filterwarnings("ignore", module="dagster")
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserFacingError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"rad3d {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
