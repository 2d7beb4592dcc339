"""Sensors: tenant discovery, and validation of raw batches that have not been validated.

A new `tenant=<id>` directory in the raw log becomes a partition; a new batch file
in a known tenant's day becomes exactly one validation run of that partition, with
a run key derived from the files themselves (recloop.monitoring.new_data), so a daemon restart
or a lost cursor never validates the same files twice.
"""

import json
from datetime import date

import dagster as dg

from assets.partitions import TENANTS, event_key, split_event_key
from assets.resources import RecloopResource
from recloop.monitoring.new_data import (
    changed_partitions,
    partition_name,
    raw_snapshot,
    run_key,
    unvalidated,
)

VALIDATE_EVENTS_JOB = "validate_events"


def new_tenants(instance: dg.DagsterInstance, discovered: list[str]) -> list[str]:
    known = set(instance.get_dynamic_partitions(TENANTS.name))
    return [tenant for tenant in discovered if tenant not in known]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a tenant partition for each new raw/events/tenant=<id>/ directory.",
)
def tenant_discovery_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Add a tenant partition for each raw-log tenant directory not seen before."""
    added = new_tenants(context.instance, recloop.layout().tenants())
    if not added:
        return dg.SkipReason("no new tenant directories")
    return dg.SensorResult(dynamic_partitions_requests=[TENANTS.build_add_request(added)])


@dg.sensor(
    job_name=VALIDATE_EVENTS_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Validates each raw event partition whose batch files changed (e.g. the "
    "service's new impressions and clicks). Stopped by default.",
)
def new_raw_data_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """One validation run per raw event partition whose batch files changed since the
    cursor and differ from what its last validation read. A partition whose validation
    is still queued or running waits: the next run reads every batch anyway, so a live
    partition (the service writes one batch a second) gets one run at a time, not a pile."""
    known = context.instance.get_dynamic_partitions(TENANTS.name)
    current = raw_snapshot(recloop.layout(), known)
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = unvalidated(recloop.layout(), changed_partitions(previous, current))
    busy = partitions_in_flight(context.instance)
    waiting = {name for name in changed if name in busy}
    # Waiting partitions keep their old digest, so a later tick still sees them changed.
    cursor = {
        name: previous.get(name, "") if name in waiting else digest
        for name, digest in current.items()
    }
    if not set(changed) - waiting:
        return dg.SensorResult(
            skip_reason=f"no new raw batches to validate in {len(current)} partitions"
            + (f" ({len(waiting)} waiting for a validation in flight)" if waiting else ""),
            cursor=json.dumps(cursor, sort_keys=True),
        )
    requests = []
    for name, digest in sorted(changed.items()):
        if name in waiting:
            continue
        tenant, day = name.split("/")
        requests.append(
            dg.RunRequest(
                run_key=run_key(name, digest),
                partition_key=event_key(tenant, date.fromisoformat(day)),
                tags={"recloop/raw_batches": digest[:16]},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def partitions_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """'<tenant>/<day>' of every validate_events run not finished yet."""
    runs = instance.get_runs(dg.RunsFilter(job_name=VALIDATE_EVENTS_JOB, statuses=IN_FLIGHT))
    names = set()
    for run in runs:
        key = run.tags.get("dagster/partition")
        if key:
            tenant, day = split_event_key(key)
            names.add(partition_name(tenant, day.isoformat()))
    return names
