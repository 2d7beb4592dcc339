"""New raw batches become exactly one validation run each, also across restarts."""

import json

import dagster as dg

from assets.definitions import build_definitions
from assets.partitions import TENANTS, event_key
from assets.resources import RecloopResource
from assets.sensors import VALIDATE_EVENTS_JOB, new_raw_data_sensor
from recloop.data.layout import write_parquet_atomic
from recloop.data.samples import malformed_events
from tests.conftest import TINY_DAYS, TINY_TENANT


def tick(instance, settings, cursor=None):
    resources = {"recloop": RecloopResource.from_settings(settings)}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return new_raw_data_sensor(context)


def skipped(result) -> bool:
    return isinstance(result, dg.SkipReason) or not result.run_requests


def test_each_new_batch_is_requested_once_with_a_content_run_key(
    tiny_log, tiny_settings, instance
) -> None:
    assert skipped(tick(instance, tiny_settings))  # tenant not known yet
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])

    first = tick(instance, tiny_settings)
    assert [r.partition_key for r in first.run_requests] == [
        event_key(TINY_TENANT, day) for day in TINY_DAYS
    ]
    keys = {r.run_key for r in first.run_requests}
    assert len(keys) == 3
    assert skipped(tick(instance, tiny_settings, first.cursor))

    # a daemon restart that lost its cursor asks for the very same runs (Dagster dedups them)
    again = tick(instance, tiny_settings)
    assert {r.run_key for r in again.run_requests} == keys

    # once validated, a lost cursor asks for nothing: the validation reports are the record
    job = build_definitions(tiny_settings).resolve_job_def(VALIDATE_EVENTS_JOB)
    for request in first.run_requests:
        assert job.execute_in_process(
            instance=instance, partition_key=request.partition_key
        ).success
    assert skipped(tick(instance, tiny_settings))

    # a new batch in day 2 is one new run, for that day only
    partition = tiny_log.raw_events_partition(TINY_TENANT, TINY_DAYS[1])
    write_parquet_atomic(
        malformed_events(TINY_TENANT, TINY_DAYS[1], duplicate_of="x"), partition / "zz-late.parquet"
    )
    late = tick(instance, tiny_settings, first.cursor)
    assert [r.partition_key for r in late.run_requests] == [event_key(TINY_TENANT, TINY_DAYS[1])]
    assert late.run_requests[0].run_key not in keys
    assert json.loads(late.cursor).keys() == json.loads(first.cursor).keys()


def test_a_requested_partition_key_runs_the_validation_job(
    tiny_log, tiny_settings, instance
) -> None:
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    request = tick(instance, tiny_settings).run_requests[0]
    job = build_definitions(tiny_settings).resolve_job_def(VALIDATE_EVENTS_JOB)
    result = job.execute_in_process(instance=instance, partition_key=request.partition_key)
    assert result.success


def test_a_partition_being_validated_waits_for_that_run(tiny_log, tiny_settings, instance) -> None:
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    busy_key = event_key(TINY_TENANT, TINY_DAYS[0])
    instance.add_run(
        dg.DagsterRun(
            job_name=VALIDATE_EVENTS_JOB,
            run_id="in-flight",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": busy_key},
        )
    )
    first = tick(instance, tiny_settings)
    assert busy_key not in [r.partition_key for r in first.run_requests]
    assert len(first.run_requests) == 2
    instance.report_run_failed(instance.get_run_by_id("in-flight"))
    later = tick(instance, tiny_settings, first.cursor)  # the waiting day is still due
    assert [r.partition_key for r in later.run_requests] == [busy_key]
