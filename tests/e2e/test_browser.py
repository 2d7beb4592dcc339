"""What a new user sees in a real browser (Debian's Chromium through Playwright): after
the pipeline ran (`recloop run`, the path `make demo` takes, on a generated log), the
Dagster UI shows the lineage from the raw log to the champion, re-executes one of its
runs from the run page's button and lists both under their job, and the service's
Swagger page answers at /docs. Screenshots go to `artifacts/screenshots/`."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
from playwright.sync_api import Page, sync_playwright

from assets.sensors import VALIDATE_CATALOGS_JOB
from drivers.demo import PARTITION_TAG, lineage_path
from drivers.launcher import PROJECT_ROOT, run_service
from tests.conftest import TINY_TENANT
from tests.dagster_dev import JOB_RUNS, dagster_dev, graphql
from tests.own_log import OwnLogRun

CHROMIUM = "/usr/bin/chromium"  # Playwright cannot download its own browser here
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
# Nodes of the lineage whose names the graph shows whole (longer ones are cut).
LINEAGE = ("raw_events", "validated_events", "stg_events", "training_set", "model_candidate")


def skip_the_welcome(page: Page) -> None:
    """Dagster's first visit asks to join its community; a new user clicks Skip."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def test_the_ui_shows_the_lineage_re_executes_a_run_and_the_api_docs_open(
    own_log_run: OwnLogRun, tmp_path: Path
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pipeline = own_log_run.settings
    home = pipeline.data_dir / "dagster_home"
    environment = {**pipeline.to_env(), "DAGSTER_HOME": str(home)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (parent,) = [run for run in instance.get_runs() if run.job_name == VALIDATE_CATALOGS_JOB]
    with (
        dagster_dev(environment, tmp_path / "dagster_dev.log") as ui,
        run_service(pipeline, log_name="browser.log") as service,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        # The page `make demo` prints, on this test's port.
        page.goto(ui + lineage_path("champion_model"), wait_until="networkidle")
        skip_the_welcome(page)
        for name in (*LINEAGE, "champion_model"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "lineage.png")

        page.goto(f"{ui}/runs/{parent.run_id}", wait_until="networkidle")
        skip_the_welcome(page)
        page.get_by_role("button", name="Re-execute all (*)").click()
        page.wait_for_url(lambda url: parent.run_id not in url, timeout=30_000)
        rerun_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 300
            while not (rerun := instance.get_run_by_id(rerun_id)).is_finished:
                assert time.monotonic() < deadline, "the re-executed run did not finish"
                time.sleep(2)
        assert rerun.status == dg.DagsterRunStatus.SUCCESS
        assert rerun.parent_run_id == parent.run_id
        assert rerun.tags[PARTITION_TAG] == parent.tags[PARTITION_TAG] == TINY_TENANT
        # The job's page lists both: the pipeline's run and its re-execution.
        job = graphql(ui, JOB_RUNS, {"job": VALIDATE_CATALOGS_JOB})["pipelineOrError"]
        assert {parent.run_id, rerun_id} <= {run["runId"] for run in job["runs"]}
        page.get_by_text("RUN_SUCCESS").first.wait_for(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "re_executed_run.png")

        page.goto(f"{service.url}/docs", wait_until="networkidle")
        # BentoML's page hides the title; the description and the version badge show.
        page.get_by_text("Top-k recommendations from the registry's champion").wait_for(
            timeout=30_000
        )
        page.get_by_text("/recommend", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "api_docs.png")
        browser.close()
