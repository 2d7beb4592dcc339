"""A retrain sensor under a real `dagster-daemon` on the scale profile's instance
(deploy/scale/dagster.yaml: runs, event logs, schedules and sensor ticks in
PostgreSQL): validated events newer than the champion's data make
`retrain_on_new_data_sensor` launch a retrain, a run process of its own that reads and
writes the database."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from assets.definitions import build_definitions
from assets.monitoring import RETRAIN_JOB, retrain_on_new_data_sensor
from assets.sensors import VALIDATE_EVENTS_JOB, tenant_range_tags
from drivers.demo import QUIET_LOGS, InProcessJobs
from drivers.launcher import PROJECT_ROOT
from drivers.loop import DaemonOrchestrator
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.data.movielens import to_raw_log
from recloop.settings import DAGSTER_PG_URL_ENV
from tests.server_fixtures import scratch_database
from tests.two_tenants import tenant_frames, two_tenant_system

TENANT = "books"
TIMEOUT_S = 420


def sensor_runs(url: str, sensor: str) -> list[tuple[str, str]]:
    """(job name, status) of the runs `sensor` launched, from the database itself."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "select r.pipeline_name, r.status from runs r join run_tags t "
                "on t.run_id = r.run_id where t.key = 'dagster/sensor_name' and t.value = %s",
                (sensor,),
            )
            return cursor.fetchall()
    finally:
        connection.close()


def add_todays_batch(layout: DataLayout) -> int:
    """Ratings of the tenant's users dated today, as a new raw batch."""
    frames = tenant_frames(TENANT)
    ratings = frames.ratings.head(40).copy()
    ratings["timestamp"] = int(time.time()) - 60
    events = to_raw_log(replace(frames, ratings=ratings), TENANT).events
    events["event_id"] = "today:" + events["event_id"]
    day = pd.Timestamp.now(tz="UTC").date()
    write_parquet_atomic(events, layout.raw_events_partition(TENANT, day) / "new-batch.parquet")
    return len(events)


def test_a_retrain_sensor_runs_under_a_daemon_on_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "scale" / "dagster.yaml", home / "dagster.yaml")
    with scratch_database() as url:
        monkeypatch.setenv(DAGSTER_PG_URL_ENV, url)
        with two_tenant_system(tmp_path, home, retrain_after_events=1) as system:
            assert system.train(TENANT).success
            added = add_todays_batch(DataLayout(system.settings.data_dir))
            # Validated here (tests/integration/test_new_data_sensor.py covers the sensor
            # that asks for it); the daemon's sensor finds the validated events.
            today = pd.Timestamp.now(tz="UTC").date()
            jobs = InProcessJobs(build_definitions(system.settings), system.instance)
            tags = tenant_range_tags(TENANT, [today])
            assert jobs.run(VALIDATE_EVENTS_JOB, QUIET_LOGS, tags).success
            sensors = (retrain_on_new_data_sensor.name,)
            daemon = DaemonOrchestrator(system.settings, system.instance, sensors=sensors)
            daemon.start()
            try:
                deadline = time.monotonic() + TIMEOUT_S
                while time.monotonic() < deadline:
                    daemon.check()
                    retrains = sensor_runs(url, retrain_on_new_data_sensor.name)
                    if any(status in ("SUCCESS", "FAILURE") for _, status in retrains):
                        break
                    time.sleep(2)
            finally:
                daemon.stop()
        retrains = sensor_runs(url, retrain_on_new_data_sensor.name)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = instance.get_run_records(dg.RunsFilter(job_name=RETRAIN_JOB))
            steps = {
                stat.step_key
                for record in records
                for stat in instance.get_run_step_stats(record.dagster_run.run_id)
            }
            failures = [
                str(entry.dagster_event.event_specific_data.error)
                for record in records
                for entry in instance.all_logs(
                    record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
                )
            ]
    print(f"\n{added} new events; retrain runs {retrains}")
    assert retrains and retrains[0][0] == RETRAIN_JOB
    assert retrains[0][1] in ("SUCCESS", "FAILURE"), retrains
    # The retrain ran the chain in its own process, recorded in PostgreSQL; on this small
    # tenant the default gates may block its candidate, and nothing else may fail it.
    assert "model_candidate" in steps, steps
    assert all("blocking asset check failed" in failure for failure in failures), failures
