"""What a new user sees in a real browser (Debian's Chromium through Playwright): after
the pipeline ran (`recloop run`, the path `make demo` takes, on a generated log), the
Dagster UI shows the lineage from the raw log to the champion and re-executes one of
its runs, and the service's Swagger page answers at /docs. Screenshots go to
`artifacts/screenshots/`."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, sync_playwright

from drivers.demo import lineage_path
from drivers.launcher import PROJECT_ROOT, run_service
from recloop.data.layout import DataLayout
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.settings import Settings
from tests.conftest import TINY_TENANT
from tests.dagster_dev import dagster_dev
from tests.integration.test_refit_serving import positives_only_frames

CHROMIUM = "/usr/bin/chromium"  # Playwright cannot download its own browser here
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
# Nodes of the lineage whose names the graph shows whole (longer ones are cut).
LINEAGE = ("raw_events", "validated_events", "stg_events", "training_set", "model_candidate")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A generated positives-only log through `recloop run`: workspace runs and a champion."""
    root = tmp_path_factory.mktemp("browser")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=7 - n) for n in range(8)]
    data_dir = root / "data"
    write_raw_log(to_raw_log(positives_only_frames(days), TINY_TENANT), DataLayout(data_dir))
    settings = Settings(data_dir=data_dir, champion_algorithm="ease")
    completed = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "recloop"), "run", "--artifacts", str(root)],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return settings


def skip_the_welcome(page: Page) -> None:
    """Dagster's first visit asks to join its community; a new user clicks Skip."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def test_the_ui_shows_the_lineage_re_executes_a_run_and_the_api_docs_open(
    pipeline: Settings, tmp_path: Path
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    home = pipeline.data_dir / "dagster_home"
    environment = {**pipeline.to_env(), "DAGSTER_HOME": str(home)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (parent,) = [run for run in instance.get_runs() if run.job_name == "validate_catalogs"]
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
