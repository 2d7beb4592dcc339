"""`make loop` / `recloop simulate`: the closed loop, end to end, with simulated users.

1. MovieLens-100K, moved in time so its last day is yesterday, goes through the
   whole pipeline (as in `make demo`) into its own data directory; a champion is
   trained and promoted.
2. The BentoML service starts; simulated users (recloop.simulator) send real
   /recommend requests and click through /feedback.
3. Dagster watches: `new_raw_data_sensor` validates the service's new batches,
   `drift_sensor` reads the champion's drift report and, past its thresholds,
   requests one `refresh_and_retrain` run (features, training, gates, promotion).
   With `--orchestrator daemon` (the default) a real `dagster-daemon` launches
   the runs; `inline` evaluates the same sensors here and executes their runs in
   process (what the test suite uses: no daemon start-up, same code).
4. At a chosen point the users' tastes drift; the loop waits for detection,
   retraining, the gate and the hot swap, then measures CTR again.

Writes artifacts/loop_timeline.json and .png, and adds `loop` to
artifacts/demo_summary.json.
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np

from assets.definitions import build_definitions
from assets.monitoring import RETRAIN_JOB, drift_sensor
from assets.plots import loop_timeline_png
from assets.resources import RecloopResource
from assets.sensors import VALIDATE_EVENTS_JOB, new_raw_data_sensor
from drivers.demo import QUIET_LOGS, build_features, train_and_promote
from drivers.launcher import PROJECT_ROOT, post_json, serve
from recloop.data.layout import DataLayout, write_json_atomic
from recloop.data.movielens import fetch_recbole_wheel, read_ml100k_wheel, shift_to_end_before
from recloop.experiments import directory_digest
from recloop.registry.model_registry import Registry
from recloop.settings import (
    CHAMPION_ALGORITHMS,
    DEFAULT_CHAMPION_ALGORITHM,
    Settings,
    api_key_from_env,
)
from recloop.simulator import SCENARIOS, Population, Scenario, fit_population

Orchestrator = Literal["daemon", "inline"]
MAX_EXCLUDE = 1_000  # the service's limit on `exclude`
LOOP_SENSORS = (new_raw_data_sensor.name, drift_sensor.name)
# The loop isolates the drift trigger: new-data retraining would fire on the traffic too.
LOOP_RETRAIN_AFTER_EVENTS = 100_000_000
DAGSTER_YAML = """\
# Written by `make loop`: steps that open the DuckDB warehouse run one at a time.
# Each run is a process that imports torch and Feast: on 2 cores, two at a time.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 2
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 10
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class LoopConfig:
    data_dir: Path
    artifacts: Path
    orchestrator: Orchestrator = "daemon"
    scenario: Scenario = "grounded"  # the simulated users (recloop.simulator)
    champion_algorithm: str = DEFAULT_CHAMPION_ALGORITHM  # what the champion chain trains
    sessions_before_drift: int = 1_500
    sessions_after_swap: int = 1_500
    rate: float = 40.0  # sessions per second, all workers together
    workers: int = 4
    k: int = 10
    drift_share: float = 0.5
    drift_window: int = 3_000  # impressions per drift window
    post_drift_impressions: int = 60_000  # collected after detection, before the retrain
    seed: int = 0
    timeout_s: float = 1_200.0  # from drift to the swap
    tick_s: float = 5.0  # inline orchestrator: seconds between sensor evaluations


@dataclass(frozen=True)
class Session:
    at: float  # epoch seconds when the response arrived
    phase: str
    model_version: str
    impressions: int
    clicks: int
    drifted_user: bool
    # Expected clicks of the best list of the same length for this user at this moment
    # (recloop.simulator's ideal_ctr over the items they have not consumed): what was
    # attainable, which shrinks as users consume their favourite films.
    ideal_clicks: float
    expected_clicks: float  # the simulator's P(click) summed over the shown list
    variant: str = "champion"  # the response's variant ("<experiment>:<variant>" in a test)


@dataclass
class Traffic:
    """Worker threads that each run sessions: recommend, then click what the user likes."""

    url: str
    population: Population
    config: LoopConfig
    consumed: dict[str, set[str]]  # items each user rated or clicked
    drift_group: np.ndarray  # (n_users,) bool: the users whose tastes drift (or will)
    phase: str = "before_drift"
    sessions: list[Session] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for worker in range(self.config.workers):
            thread = threading.Thread(target=self._work, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def count(self, phase: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.sessions if phase is None or s.phase == phase)

    def versions(self) -> set[str]:
        with self._lock:
            return {s.model_version for s in self.sessions}

    def _work(self, worker: int) -> None:
        rng = np.random.default_rng([self.config.seed, worker])
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        interval = self.config.workers / self.config.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            population, phase = self.population, self.phase
            user = int(rng.integers(len(population.user_ids)))
            try:
                session = self._session(connection, rng, population, user, phase)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            with self._lock:
                self.sessions.append(session)

    def _post(self, connection: http.client.HTTPConnection, path: str, body: dict) -> dict:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise ValueError(f"{path} answered {response.status}: {payload[:200]!r}")
        return json.loads(payload)

    def _session(
        self,
        connection: http.client.HTTPConnection,
        rng: np.random.Generator,
        population: Population,
        user: int,
        phase: str,
    ) -> Session:
        user_id = str(population.user_ids[user])
        with self._lock:
            consumed = frozenset(self.consumed.setdefault(user_id, set()))
        # The app knows what its user watched and asks the service to leave it out, as a
        # real client would: a stale model then shows the next best, not the same list.
        exclude = sorted(consumed)[:MAX_EXCLUDE]
        answer = self._post(
            connection, "/recommend", {"user_id": user_id, "k": self.config.k, "exclude": exclude}
        )
        shown = [item["item_id"] for item in answer["items"]]
        clicked = population.clicks(rng, user, shown, consumed)
        with self._lock:
            self.consumed[user_id].update(shown[position] for position in clicked)
        for position in clicked:
            self._post(
                connection,
                "/feedback",
                {
                    "request_id": answer["request_id"],
                    "user_id": user_id,
                    "item_id": shown[position],
                    "event_type": "click",
                },
            )
        return Session(
            time.time(),
            phase,
            answer["model_version"],
            len(shown),
            len(clicked),
            bool(self.drift_group[user]),
            population.ideal_ctr(user, len(shown), consumed) * len(shown) if shown else 0.0,
            float(population.click_probabilities(user, shown, consumed).sum()),
            answer["variant"],
        )


def loop_settings(data_dir: Path, first_day: datetime, config: LoopConfig) -> Settings:
    return Settings(
        data_dir=data_dir.resolve(),
        partitions_start=first_day.date(),
        drift_window=config.drift_window,
        retrain_after_events=LOOP_RETRAIN_AFTER_EVENTS,
        post_drift_impressions=config.post_drift_impressions,
        champion_algorithm=config.champion_algorithm,
    )


UNFINISHED = dg.RunsFilter(
    statuses=[
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.QUEUED,
    ]
)


def unfinished_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(UNFINISHED))


def abandon_unfinished_runs(instance: dg.DagsterInstance) -> None:
    """Fail the runs an interrupted loop left behind and free their pool slots: nothing
    else uses this instance before the loop starts, so none of them is still running."""
    for run in unfinished_runs(instance):
        instance.report_run_failed(run, "abandoned by an interrupted `make loop`")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def prepare(
    config: LoopConfig,
) -> tuple[Settings, dg.DagsterInstance, Population, dict[str, set[str]]]:
    """The time-shifted pipeline, a champion (reused when the data dir has one), the
    scenario's simulated users and what each of them rated."""
    layout = DataLayout(config.data_dir.resolve())
    frames = read_ml100k_wheel(fetch_recbole_wheel(layout.cache))
    shift = shift_to_end_before(frames, datetime.now(UTC))
    first = datetime.fromtimestamp(int(frames.ratings["timestamp"].min()), UTC) + shift
    settings = loop_settings(layout.root, first, config)
    home = layout.root / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = dg.DagsterInstance.from_config(str(home))
    abandon_unfinished_runs(instance)
    if Registry.of(settings).champion() is None:
        train_and_promote(build_features(settings, instance, shift), instance)
    rated = frames.ratings.groupby("user_id")["item_id"].agg(set).to_dict()
    population = fit_population(config.scenario, frames.ratings, frames.items, seed=config.seed)
    return settings, instance, population, rated


class InlineOrchestrator:
    """Evaluates the named sensors every `tick_s` and executes their runs in process,
    honouring run keys as the daemon does. The definitions are rebuilt when the
    experiment specs change, as the daemon's reload of the code location would."""

    def __init__(
        self,
        settings: Settings,
        instance: dg.DagsterInstance,
        tick_s: float,
        sensors: tuple[str, ...] = LOOP_SENSORS,
    ):
        self.settings, self.sensor_names = settings, sensors
        self.defs = build_definitions(settings)
        self.specs_digest = self._specs_digest()
        self.resources = {"recloop": RecloopResource.from_settings(settings)}
        self.instance, self.tick_s = instance, tick_s
        self.failure: BaseException | None = None
        self.cursors: dict[str, str | None] = {}
        self.run_keys: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def validate_the_rest(self) -> None:
        """One last evaluation of the validation sensor, with its runs: the batches the
        service wrote since the last tick (a retrain run can hold the ticks until the
        loop's last sessions) are validated before the loop reports."""
        self.tick(only=(new_raw_data_sensor.name,))

    def _specs_digest(self) -> str:
        directory = self.settings.experiments_dir
        return directory_digest(directory) if directory.is_dir() else ""

    def tick(self, only: tuple[str, ...] | None = None) -> None:
        """Evaluate the named sensors (or `only` these) once and execute their new runs."""
        digest = self._specs_digest()
        if digest != self.specs_digest:
            self.defs, self.specs_digest = build_definitions(self.settings), digest
        defined = {sensor.name: sensor for sensor in self.defs.sensors or []}
        for name in only or self.sensor_names:
            if name not in defined:
                continue  # e.g. the spec sensor, while no spec needs training
            sensor = defined[name]
            with (
                dg.partition_loading_context(dynamic_partitions_store=self.instance),
                dg.build_sensor_context(
                    instance=self.instance,
                    cursor=self.cursors.get(sensor.name),
                    definitions=self.defs,
                    resources=self.resources,
                ) as context,
            ):
                result = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = result.cursor
            for request in result.run_requests or []:
                if request.run_key in self.run_keys:
                    continue
                self.run_keys.add(request.run_key)
                self._execute(request.job_name or sensor.job_name, request)

    def _execute(self, job_name: str, request: dg.RunRequest) -> None:
        job = self.defs.resolve_job_def(job_name)
        tags = {**request.tags, "dagster/run_key": request.run_key}
        kwargs = {"partition_key": request.partition_key} if request.partition_key else {}
        result = job.execute_in_process(
            instance=self.instance,
            tags=tags,
            run_config={**QUIET_LOGS, **(request.run_config or {})},
            raise_on_error=False,
            **kwargs,
        )
        if not result.success and job_name == VALIDATE_EVENTS_JOB:
            raise RuntimeError(f"validation run {result.run_id} failed: the loop cannot go on")

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.tick_s):
                self.tick()
        except BaseException as exc:  # handed to the main thread by check()
            self.failure = exc

    def check(self) -> None:
        """Raise in the caller what stopped the orchestrator thread, if anything did."""
        if self.failure is not None:
            raise RuntimeError("the inline orchestrator stopped") from self.failure


class DaemonOrchestrator:
    """A real `dagster-daemon` on the loop's instance, with the named sensors started
    (sensors that run by default, like the experiment ones, need no start)."""

    def __init__(
        self,
        settings: Settings,
        instance: dg.DagsterInstance,
        sensors: tuple[str, ...] = LOOP_SENSORS,
        drain_timeout_s: float = 600.0,
    ):
        home = Path(instance.root_directory)
        self.instance = instance
        self.sensors = sensors
        self.drain_timeout_s = drain_timeout_s
        self.env = {**os.environ, **settings.to_env(), "DAGSTER_HOME": str(home)}
        self.log = home / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def _dagster(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "dagster"), *args]

    def start(self) -> None:
        workspace = str(PROJECT_ROOT / "workspace.yaml")
        for sensor in self.sensors:
            subprocess.run(
                self._dagster("sensor", "start", sensor, "-w", workspace),
                env=self.env,
                cwd=PROJECT_ROOT,
                check=True,
                capture_output=True,
            )
        out = open(self.log, "ab")  # noqa: SIM115  (closed with the process in stop())
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", workspace],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def check(self) -> None:
        """Raise when the daemon died (its log says why)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {self.proc.returncode}; see {self.log}")

    def stop(self) -> None:
        """Let the runs in flight finish (the traffic has stopped, so the sensors soon
        have nothing new to ask for), then stop the daemon and what it left in its
        session. Stopping a run mid-way would fail it, and its run key would keep the
        sensor from asking for the same partition again: a validation cut short then
        leaves the last events out of the readouts."""
        deadline = time.monotonic() + self.drain_timeout_s
        while self.proc is not None and unfinished_runs(self.instance):
            if time.monotonic() > deadline:
                print(
                    f"loop: runs still in flight after {self.drain_timeout_s:.0f} s; stopping them",
                    file=sys.stderr,
                )
                break
            self.check()
            time.sleep(2.0)
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            with contextlib.suppress(ProcessLookupError):  # the session is already empty
                os.killpg(self.proc.pid, signal.SIGTERM)


def _wait(
    condition: Callable[[], bool], timeout_s: float, what: str, check: Callable[[], None]
) -> bool:
    """Poll `condition` until true or `timeout_s`; `check` raises when waiting is pointless."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check()
        if condition():
            return True
        time.sleep(0.5)
    print(f"loop: gave up waiting for {what} after {timeout_s:.0f} s", file=sys.stderr)
    return False


def retrain_runs(instance: dg.DagsterInstance, since: float) -> list[dict]:
    """Runs of the retrain job created after `since` (epoch s), oldest first."""
    records = instance.get_run_records(dg.RunsFilter(job_name=RETRAIN_JOB))
    runs = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        created = record.create_timestamp.timestamp()
        if created < since:
            continue
        run = record.dagster_run
        runs.append(
            {
                "run_id": run.run_id,
                "run_key": run.tags.get("dagster/run_key"),
                "trigger": run.tags.get("recloop/trigger"),
                "reason": run.tags.get("recloop/reason"),
                "drift_since": run.tags.get("recloop/drift_since"),
                "status": run.status.value,
                "created": created,
                "ended": record.end_time,
            }
        )
    return runs


def ctr(sessions: list[Session]) -> float:
    impressions = sum(s.impressions for s in sessions)
    return sum(s.clicks for s in sessions) / impressions if impressions else float("nan")


def recovery_against_control(ctr_by_users: dict[str, dict[str, float]]) -> float:
    """The drifted users' CTR as a share of the unchanged users' at the same time, after
    the retrain over before the drift. The unchanged users are the control: CTR falls for
    everyone as users consume the films they like best (never clicked twice), and the
    control's fall takes that out, which after-over-before CTR (`recovery`) does not."""
    drifted, unchanged = ctr_by_users["drifted"], ctr_by_users["unchanged"]
    after = drifted["after_retrain"] / unchanged["after_retrain"]
    return after / (drifted["before_drift"] / unchanged["before_drift"])


def share_of_ideal(sessions: list[Session]) -> float:
    """Clicks over the expected clicks of the best lists at the same moments: CTR net of
    what users had already consumed."""
    attainable = sum(s.ideal_clicks for s in sessions)
    return sum(s.clicks for s in sessions) / attainable if attainable else float("nan")


def run_loop(config: LoopConfig) -> dict:
    """Everything in the module docstring; returns the `loop` summary."""
    settings, instance, population, rated = prepare(config)
    registry = Registry.of(settings)
    first_champion = registry.champion()
    orchestrator = (
        InlineOrchestrator(settings, instance, config.tick_s)
        if config.orchestrator == "inline"
        else DaemonOrchestrator(settings, instance)
    )
    started = time.time()
    with serve(settings, {"RECLOOP_RELOAD_INTERVAL_S": "1"}) as url:
        drifted = population.with_drift(config.drift_share, config.seed)
        traffic = Traffic(url, population, config, rated, drifted.drifted_users)
        orchestrator.start()
        traffic.start()
        try:
            print(
                f"loop: {config.sessions_before_drift} sessions with the champion {first_champion}, "
                f"{population.scenario} users"
            )
            _wait(
                lambda: traffic.count() >= config.sessions_before_drift,
                3_600,
                "traffic",
                orchestrator.check,
            )
            traffic.population = drifted
            traffic.phase = "after_drift"
            drift_at = time.time()
            print(
                f"loop: tastes drifted for {config.drift_share:.0%} of the users; waiting for the loop"
            )
            swapped = _wait(
                lambda: (
                    any(v != first_champion for v in traffic.versions())
                    or _blocked(instance, drift_at)
                ),
                config.timeout_s,
                "detection, retraining and the hot swap",
                orchestrator.check,
            )
            swapped = swapped and any(v != first_champion for v in traffic.versions())
            if swapped:
                traffic.phase = "after_retrain"
                swap_at = time.time()
                print(
                    f"loop: now serving {registry.champion()}; {config.sessions_after_swap} more sessions"
                )
                _wait(
                    lambda: traffic.count("after_retrain") >= config.sessions_after_swap,
                    3_600,
                    "traffic after the swap",
                    orchestrator.check,
                )
            if isinstance(orchestrator, InlineOrchestrator):
                # What the service still buffers goes to disk, then through validation.
                traffic.stop()
                orchestrator.stop()
                key = api_key_from_env()
                post_json(f"{url}/admin/flush", {}, {"X-API-Key": key} if key else None)
                orchestrator.validate_the_rest()
        finally:
            traffic.stop()
            orchestrator.stop()
    sessions = list(traffic.sessions)
    runs = retrain_runs(instance, started)
    promotions = [asdict(r) for r in registry.history() if r.at > _iso(started)]
    episode = DataLayout(settings.data_dir).drift_episode(first_champion)
    detected_at = (
        datetime.fromisoformat(json.loads(episode.read_text())["detected_at"]).timestamp()
        if episode.exists()
        else None
    )
    after_drift = [s for s in sessions if s.phase == "after_drift"]
    before_detection = [s for s in after_drift if detected_at is None or s.at <= detected_at]
    before = [s for s in sessions if s.phase == "before_drift"]
    phases = {
        "before_drift": before[len(before) // 2 :],  # the second half: the service warmed up
        "after_drift": after_drift,
        "after_retrain": [s for s in sessions if s.phase == "after_retrain"],
    }
    loop = {
        "orchestrator": config.orchestrator,
        "scenario": population.scenario,
        "sessions": len(sessions),
        "failed_requests": len(traffic.failures),
        "failures": traffic.failures[:10],
        "drift_share": config.drift_share,
        "drift_window_impressions": config.drift_window,
        **{f"ctr_{phase}": ctr(group) for phase, group in phases.items()},
        "drift_detected_after_events": (
            sum(s.impressions + s.clicks for s in before_detection) if detected_at else None
        ),
        "drift_detected_after_s": round(detected_at - drift_at, 1) if detected_at else None,
        "retrain_runs": runs,
        "promotions": promotions,
        "champion_before": first_champion,
        "champion_after": registry.champion(),
        "swap_after_s": round(swap_at - drift_at, 1) if swapped else None,
    }
    loop["recovery"] = loop["ctr_after_retrain"] / loop["ctr_before_drift"]
    loop["share_of_ideal"] = {phase: share_of_ideal(group) for phase, group in phases.items()}
    loop["recovery_of_ideal_share"] = (
        loop["share_of_ideal"]["after_retrain"] / loop["share_of_ideal"]["before_drift"]
    )
    loop["ctr_by_users"] = {
        group: {
            phase: ctr([s for s in sessions if s.phase == phase and s.drifted_user == drifted])
            for phase in ("before_drift", "after_drift", "after_retrain")
        }
        for group, drifted in (("drifted", True), ("unchanged", False))
    }
    loop["recovery_against_unchanged"] = recovery_against_control(loop["ctr_by_users"])
    timeline = {
        "started": started,
        "scenario": population.scenario,
        "marks": _marks(drift_at, detected_at, runs, promotions, swap_at if swapped else None),
        "sessions": [asdict(s) for s in sessions],
    }
    config.artifacts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(timeline, config.artifacts / "loop_timeline.json")
    loop_timeline_png(timeline, config.artifacts / "loop_timeline.png")
    loop["timeline"] = str(config.artifacts / "loop_timeline.json")
    loop["plot"] = str(config.artifacts / "loop_timeline.png")
    return loop


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _blocked(instance: dg.DagsterInstance, since: float) -> bool:
    """A retrain after the drift finished without promoting (gate failed or run failed)."""
    finished = [r for r in retrain_runs(instance, since) if r["ended"] is not None]
    return bool(finished) and all(r["status"] != "SUCCESS" for r in finished)


def _marks(
    drift_at: float,
    detected_at: float | None,
    runs: list[dict],
    promotions: list[dict],
    swap_at: float | None,
) -> list[dict]:
    marks = [{"at": drift_at, "what": "drift injected"}]
    if detected_at:
        marks.append({"at": detected_at, "what": "drift detected"})
    for run in runs:
        marks.append({"at": run["created"], "what": f"retrain requested ({run['trigger']})"})
        if run["ended"]:
            marks.append({"at": run["ended"], "what": f"retrain {run['status'].lower()}"})
    for promotion in promotions:
        marks.append(
            {
                "at": datetime.fromisoformat(promotion["at"]).timestamp(),
                "what": f"{promotion['action']} {promotion['version']}",
            }
        )
    if swap_at:
        marks.append({"at": swap_at, "what": "service swapped"})
    return sorted(marks, key=lambda m: m["at"])


def merge_into_summary(part: dict, artifacts: Path, key: str = "loop") -> Path:
    """Add `part` under `key` to artifacts/demo_summary.json (made by `make demo`)."""
    path = artifacts / "demo_summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary[key] = part
    write_json_atomic(summary, path)
    return path


def print_loop(loop: dict) -> None:
    print()
    print(f"  scenario            {loop['scenario']:>10}")
    print(
        f"  sessions            {loop['sessions']:>10,} ({loop['failed_requests']} failed requests)"
    )
    print(f"  CTR before drift    {loop['ctr_before_drift']:>10.4f}")
    print(f"  CTR after drift     {loop['ctr_after_drift']:>10.4f}")
    print(
        f"  CTR after retrain   {loop['ctr_after_retrain']:>10.4f}  ({loop['recovery']:.0%} of before)"
    )
    print(
        f"  against unchanged   {loop['recovery_against_unchanged']:>10.0%}  (drifted / unchanged "
        "users' CTR, after the retrain over before the drift)"
    )
    shares = loop["share_of_ideal"]
    print(
        "  share of ideal      "
        f"{shares['before_drift']:.0%} -> {shares['after_drift']:.0%} -> "
        f"{shares['after_retrain']:.0%} (clicks / the best lists' expected clicks)"
    )
    print(
        f"  drift detected      after {loop['drift_detected_after_events']} events, {loop['drift_detected_after_s']} s"
    )
    for run in loop["retrain_runs"]:
        print(
            f"  retrain run         {run['run_id'][:8]} {run['trigger']} {run['status']}: {run['reason']}"
        )
    for promotion in loop["promotions"]:
        print(f"  {promotion['action']:<19} {promotion['version']}")
    print(f"  timeline            {loop['timeline']}, {loop['plot']}")


def add_simulation_arguments(parser: argparse.ArgumentParser, data_dir: Path) -> None:
    """What `make loop` and `make experiments` share: where they write, how Dagster runs,
    --scenario and --champion-algorithm."""
    parser.add_argument("--data-dir", type=Path, default=data_dir)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--orchestrator", choices=["daemon", "inline"], default="daemon")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=LoopConfig.scenario,
        help="the simulated users: tastes from factorisations of which films users chose and "
        "how they rated them (grounded) or from genres and item quality (genre_taste); see "
        "recloop/simulator.py",
    )
    parser.add_argument(
        "--champion-algorithm",
        choices=CHAMPION_ALGORITHMS,
        default=Settings.from_env().champion_algorithm,
        help="what the champion chain trains (default: RECLOOP_CHAMPION_ALGORITHM, else multi_stage)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recloop simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulation_arguments(parser, Path("data") / "loop")
    parser.add_argument(
        "--sessions-before-drift", type=int, default=LoopConfig.sessions_before_drift
    )
    parser.add_argument("--sessions-after-swap", type=int, default=LoopConfig.sessions_after_swap)
    parser.add_argument("--rate", type=float, default=LoopConfig.rate, help="sessions per second")
    parser.add_argument("--drift-share", type=float, default=LoopConfig.drift_share)
    parser.add_argument("--drift-window", type=int, default=LoopConfig.drift_window)
    parser.add_argument(
        "--post-drift-impressions", type=int, default=LoopConfig.post_drift_impressions
    )
    parser.add_argument("--seed", type=int, default=LoopConfig.seed)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    config = LoopConfig(
        data_dir=args.data_dir,
        artifacts=args.artifacts,
        orchestrator=args.orchestrator,
        scenario=args.scenario,
        champion_algorithm=args.champion_algorithm,
        sessions_before_drift=args.sessions_before_drift,
        sessions_after_swap=args.sessions_after_swap,
        rate=args.rate,
        drift_share=args.drift_share,
        drift_window=args.drift_window,
        post_drift_impressions=args.post_drift_impressions,
        seed=args.seed,
    )
    loop = run_loop(config)
    path = merge_into_summary(loop, config.artifacts)
    print_loop(loop)
    print(f"\n  added `loop` to {path}")
    return 0 if loop["failed_requests"] == 0 and loop["promotions"] else 1


if __name__ == "__main__":
    sys.exit(main())
