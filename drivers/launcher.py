"""Start the recloop service (or any BentoML service) as a real HTTP server.

Used by the demo's smoke step, the HTTP tests and the serving benchmark, so all
three talk to the same server a user gets from `make serve`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from recloop.settings import Settings

SERVICE_TARGET = "services.service:RecloopService"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base_url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `base_url/readyz` until it answers 200; raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # refused, 503 (HTTPError), timeout
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url}/readyz not ready after {timeout_s:.0f} s")


def process_tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """The `bentoml serve` arbiter and its descendants (its workers), while they run."""
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(processes: list[psutil.Process]) -> None:
    """SIGKILL each process's group. One group is not enough: BentoML starts every
    worker in a session of its own, so killing the arbiter's group leaves them serving."""
    groups = set()
    for process in processes:
        # is_running() compares start times, so a reused pid is never signalled.
        with contextlib.suppress(ProcessLookupError):
            if process.is_running():
                groups.add(os.getpgid(process.pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)


def stop_server(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the `bentoml serve` arbiter, which stops its workers; then SIGKILL
    whatever is left of it and its workers (after `grace_s` at the latest)."""
    processes = process_tree(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    kill_tree(processes)
    proc.wait()


@dataclass(frozen=True)
class Server:
    """A running `bentoml serve`: its base URL and its arbiter process."""

    url: str
    proc: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL the arbiter and every worker at once, as a crash would: no shutdown
        hook runs. Returns once they are gone."""
        kill_tree(process_tree(self.proc))
        self.proc.wait()


@contextlib.contextmanager
def run_bentoml(
    target: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    *,
    ready_timeout_s: float = 120.0,
    log_path: Path | None = None,
    wait_for_ready: bool = True,
) -> Iterator[Server]:
    """Run `bentoml serve target` on 127.0.0.1 and yield it (once ready).

    `env` is added to this process's environment. Without BENTOML_HOME the server
    gets a temporary one, so servers side by side keep their Prometheus directories
    apart (`bentoml serve` empties `$BENTOML_HOME/prometheus_multiproc_dir` at start).
    Output goes to `log_path` or is discarded. The server is stopped on exit.
    """
    port = port or free_port()
    command = [sys.executable, "-m", "bentoml", "serve", target]
    command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", **(env or {})}
    with contextlib.ExitStack() as stack:
        if "BENTOML_HOME" not in (env or {}):
            full_env["BENTOML_HOME"] = stack.enter_context(tempfile.TemporaryDirectory())
        out = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            command,
            env=full_env,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_server, proc)
        base_url = f"http://127.0.0.1:{port}"
        if wait_for_ready:
            wait_ready(base_url, ready_timeout_s, proc)
        yield Server(base_url, proc)


@contextlib.contextmanager
def start_bentoml(
    target: str, env: dict[str, str] | None = None, port: int | None = None, **kwargs
) -> Iterator[str]:
    """`run_bentoml`, yielding only the base URL."""
    with run_bentoml(target, env, port, **kwargs) as server:
        yield server.url


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points the service at `settings`' data and stores."""
    return {**settings.to_env(), "BENTOML_HOME": str(settings.data_dir / "bentoml")}


@contextlib.contextmanager
def run_service(
    settings: Settings,
    extra_env: dict[str, str] | None = None,
    log_name: str = "service.log",
    **kwargs,
) -> Iterator[Server]:
    """The recloop service on a free port, for `settings`' data directory; its output
    goes to `logs/<log_name>` there."""
    log_path = settings.data_dir / "logs" / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with run_bentoml(
        SERVICE_TARGET, {**service_env(settings), **(extra_env or {})}, log_path=log_path, **kwargs
    ) as server:
        yield server


@contextlib.contextmanager
def serve(settings: Settings, extra_env: dict[str, str] | None = None, **kwargs) -> Iterator[str]:
    """`run_service`, yielding only the base URL."""
    with run_service(settings, extra_env, **kwargs) as server:
        yield server.url


def post_json(
    url: str, body: object, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> dict:
    """POST JSON and decode the JSON answer; raises urllib.error.HTTPError on 4xx/5xx."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
