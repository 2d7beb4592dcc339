"""Sensors: tenant discovery, and validation of raw batches that have not been validated.

A new `tenant=<id>` directory in the raw log becomes a partition, and the same tick
validates its catalogs and every day of its events (one run each); `features_automation`
then rebuilds the features, and `first_champion_sensor` trains, gates and promotes the
tenant's first champion, which the running service picks up on its own. A new batch
file in a known tenant's day becomes exactly one validation run of that partition, with
a run key derived from the files themselves (recloop.monitoring.new_data), so a daemon restart
or a lost cursor never validates the same files twice.
"""

import json
from datetime import date, timedelta

import dagster as dg

from assets.partitions import TENANTS, event_key, split_event_key
from assets.resources import RecloopResource
from recloop.data.layout import DataLayout
from recloop.monitoring.new_data import (
    changed_partitions,
    partition_name,
    raw_snapshot,
    run_key,
    unvalidated,
)

VALIDATE_EVENTS_JOB = "validate_events"
VALIDATE_CATALOGS_JOB = "validate_catalogs"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

validate_events_job = dg.define_asset_job(
    VALIDATE_EVENTS_JOB,
    description="Validate raw event partitions (one day of one tenant each; a range runs "
    "in one process): valid rows on, failing rows to quarantine.",
    selection=["validated_events"],
)
validate_catalogs_job = dg.define_asset_job(
    VALIDATE_CATALOGS_JOB,
    description="Validate one tenant's user and item catalog snapshots.",
    selection=["validated_users", "validated_items"],
)


def tenant_range_tags(tenant: str, days: list[date]) -> dict[str, str]:
    """The tags of one run validating every day in `days` (sorted) of `tenant`."""
    return {
        RANGE_START_TAG: event_key(tenant, days[0]),
        RANGE_END_TAG: event_key(tenant, days[-1]),
    }


def missing_catalogs(layout: DataLayout, tenant: str) -> list[str]:
    """The catalogs (users, items) of which `tenant` has no raw snapshot yet."""
    return [
        c for c in ("users", "items") if not any(layout.raw_catalog(c, tenant).glob("*.parquet"))
    ]


def validation_requests(layout: DataLayout, tenant: str) -> list[dg.RunRequest]:
    """A new tenant's first validation: its catalogs, and every day of its events in one run."""
    requests = [
        dg.RunRequest(
            job_name=VALIDATE_CATALOGS_JOB,
            partition_key=tenant,
            run_key=f"discovered:{tenant}:catalogs",
        )
    ]
    days = layout.event_days(tenant)
    if days:
        requests.append(
            dg.RunRequest(
                job_name=VALIDATE_EVENTS_JOB,
                run_key=f"discovered:{tenant}:events",
                tags=tenant_range_tags(tenant, days),
            )
        )
    return requests


def new_tenants(instance: dg.DagsterInstance, discovered: list[str]) -> list[str]:
    known = set(instance.get_dynamic_partitions(TENANTS.name))
    return [tenant for tenant in discovered if tenant not in known]


@dg.sensor(
    jobs=[validate_catalogs_job, validate_events_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a tenant partition for each new raw/events/tenant=<id>/ directory and "
    "validates its catalogs and events (one run each).",
)
def tenant_discovery_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Add a tenant partition for each raw-log tenant directory not seen before, with a
    run validating its catalogs and one validating every day of its events."""
    layout = recloop.layout()
    discovered = new_tenants(context.instance, layout.tenants())
    # A tenant is added once its catalogs are there too: its first validation reads them.
    added = [tenant for tenant in discovered if not missing_catalogs(layout, tenant)]
    if not added:
        waiting = [
            f"{t} (no {' or '.join(missing_catalogs(layout, t))} catalog yet)" for t in discovered
        ]
        return dg.SkipReason(
            "no new tenant directories" if not waiting else f"waiting: {', '.join(waiting)}"
        )
    requests = [request for tenant in added for request in validation_requests(layout, tenant)]
    context.log.info(f"new tenants: {', '.join(added)}")
    return dg.SensorResult(
        dynamic_partitions_requests=[TENANTS.build_add_request(added)], run_requests=requests
    )


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
    """'<tenant>/<day>' of every validate_events run not finished yet (every day of a
    range run, e.g. a discovered tenant's)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=VALIDATE_EVENTS_JOB, statuses=IN_FLIGHT))
    names = set()
    for run in runs:
        key = run.tags.get("dagster/partition")
        if key:
            tenant, day = split_event_key(key)
            names.add(partition_name(tenant, day.isoformat()))
        elif RANGE_START_TAG in run.tags:
            tenant, first = split_event_key(run.tags[RANGE_START_TAG])
            _, last = split_event_key(run.tags[RANGE_END_TAG])
            names |= {
                partition_name(tenant, (first + timedelta(days=n)).isoformat())
                for n in range((last - first).days + 1)
            }
    return names
