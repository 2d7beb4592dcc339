"""`dagster dev` on the repository's workspace, as `make dev` starts it, for e2e tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from drivers.launcher import PROJECT_ROOT, free_port


@contextlib.contextmanager
def dagster_dev(environment: dict[str, str], log_path: Path) -> Iterator[str]:
    """Start `dagster dev` (webserver and daemon) with `environment` added to this
    process's; yield its base URL once it answers, stop it (and its children) after."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "dev", "-w", "workspace.yaml"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env={**os.environ, **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{url}/server_info", timeout=2)
                    break
                except (urllib.error.URLError, OSError):
                    assert process.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, "dagster dev did not answer in 180 s"
                    time.sleep(1)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a busy machine: stop waiting for a clean exit
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


# The runs the UI lists on a job's page.
JOB_RUNS = """
query ($job: String!) {
  pipelineOrError(params: {pipelineName: $job, repositoryName: "__repository__",
                           repositoryLocationName: "recloop"}) {
    __typename
    ... on Pipeline { runs { runId } }
  }
}"""


def graphql(url: str, query: str, variables: dict) -> dict:
    """One query against the webserver's GraphQL endpoint, the one its pages use."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]
