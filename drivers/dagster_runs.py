"""Launch jobs of the workspace's code location as real runs, the way the Dagster UI does.

`job.execute_in_process` records runs with no code-location origin: the UI cannot
re-execute them ("Expected non-None value ... remote_job_origin"), and they are missing
from the job's page and the timeline. `WorkspaceJobs` loads `workspace.yaml` (starting
its code server once), creates each run with the job's remote origin and snapshots,
launches it with the instance's run launcher (a subprocess, no daemon needed: the run
coordinator is bypassed, as `dagster job launch` would queue under a daemon-backed
one) and waits for it.

This is recloop's one adapter over Dagster's private API (`dagster._core`): Dagster
has no public call that launches a run with its origin from Python without a running
webserver. It follows `dagster/_cli/job.py` (`dagster job launch`) and the UI's
`dagster_graphql` launch path. The code server inherits this process's environment
(`RECLOOP_*`, `DAGSTER_HOME`) and working directory, which must be the repository root
(`workspace.yaml` loads `assets.definitions` from `.`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

POLL_S = 0.5


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: dg.DagsterRunStatus
    failures: list[str]  # "step: innermost error message", in order
    failed_checks: list[str]  # asset checks that failed with ERROR severity (WARN: a warning)

    @property
    def success(self) -> bool:
        return self.status == dg.DagsterRunStatus.SUCCESS


class WorkspaceJobs(AbstractContextManager["WorkspaceJobs"]):
    """Runs of the first (only) code location of `workspace_yaml`, with one code server
    for every run launched inside the `with` block. The code location loads at the first
    run, not before: it reads the data directory (e.g. the first day of the raw log),
    which a driver may write first."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        workspace_yaml: Path = Path("workspace.yaml"),
        base_run_config: Mapping[str, object] | None = None,
    ):
        """`base_run_config` goes under every run's own (e.g. the executor to use)."""
        self.instance = instance
        self.base_run_config = dict(base_run_config or {})
        self.workspace_yaml = workspace_yaml
        self._process: WorkspaceProcessContext | None = None

    def __enter__(self) -> WorkspaceJobs:
        return self

    def _workspace(self) -> WorkspaceProcessContext:
        if self._process is None:
            process = WorkspaceProcessContext(
                self.instance,
                WorkspaceFileTarget(paths=[str(self.workspace_yaml)]),
                code_server_log_level="WARNING",
            )
            self._process = process.__enter__()
        return self._process

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.__exit__(kind, error, trace)
            self._process = None

    def run(
        self,
        job_name: str,
        run_config: Mapping[str, object] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunOutcome:
        """Launch `job_name` (its partition, if any, in `tags`) and wait for it to end."""
        workspace = self._workspace()
        context = workspace.create_request_context()
        location_name = context.code_location_names[0]
        location = context.get_code_location(location_name)
        (repository,) = location.get_repositories().values()
        job = location.get_job(
            JobSubsetSelector(
                location_name=location_name,
                repository_name=repository.name,
                job_name=job_name,
                op_selection=None,
            )
        )
        config = {**self.base_run_config, **(run_config or {})}
        plan = location.get_execution_plan(
            job, config, step_keys_to_execute=None, known_state=None, instance=self.instance
        )
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=config,
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={**job.tags, **(tags or {})},
            root_run_id=None,
            parent_run_id=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            job_snapshot=job.job_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            asset_selection=job.asset_selection,
            asset_check_selection=job.asset_check_selection,
            resolved_op_selection=None,
            op_selection=None,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_graph=context.asset_graph,
        )
        self.instance.launch_run(run.run_id, context)
        while not (run := self.instance.get_run_by_id(run.run_id)).is_finished:
            time.sleep(POLL_S)
        return RunOutcome(
            run.run_id, run.status, self._failures(run.run_id), self._failed_checks(run.run_id)
        )

    def _failures(self, run_id: str) -> list[str]:
        failures = []
        for record in self.instance.all_logs(
            run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
        ):
            error = getattr(record.dagster_event.event_specific_data, "error", None)
            while error is not None and error.cause is not None:
                error = error.cause  # the innermost: the user's exception
            message = error.message.strip() if error is not None else record.message
            failures.append(f"{record.step_key or 'run'}: {message}")
        return failures

    def _failed_checks(self, run_id: str) -> list[str]:
        return [
            record.dagster_event.event_specific_data.check_name
            for record in self.instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if not record.dagster_event.event_specific_data.passed
            and record.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.ERROR
        ]
