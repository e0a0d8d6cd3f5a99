"""Operations: the failure record of every failed run (automation is in assets/automation.py)."""

import json
import time

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from resources.settings import Rad3dSettings


@run_failure_sensor(
    name="run_failure_record",
    default_status=DefaultSensorStatus.RUNNING,
    # Every failed run of the instance, also one that never started because its code location was
    # not found (a CLI launch naming another location) or its config was bad.
    monitor_all_code_locations=True,
)
def run_failure_record(context: RunFailureSensorContext, settings: Rad3dSettings) -> None:
    """Writes one JSON record per failed run of the instance (any code location) under <out>/failures/.

    The data root is the settings resource's (RAD3D_OUT, as the composition root built it).
    """
    folder = settings.out / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    run = context.dagster_run
    record = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": dict(run.tags),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "message": context.failure_event.message,
    }
    (folder / f"{run.run_id}.json").write_text(json.dumps(record, indent=2))
