"""Runtime settings, read from the environment in exactly one place.

Every `RECLOOP_*` variable is declared once in `ENV_VARIABLES` (name, default, meaning);
the README's settings table lists exactly those (tests/unit/test_settings.py checks it).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

OnlineStoreKind = Literal["sqlite", "redis"]
# Where the service keeps what feedback is checked against (served lists, the feedback
# ledger, fresh stream features): one process's memory, or Redis, shared by every worker.
RequestStateKind = Literal["memory", "redis"]

DATA_DIR_ENV = "RECLOOP_DATA_DIR"
ONLINE_STORE_ENV = "RECLOOP_ONLINE_STORE"
PROFILE_ENV = "RECLOOP_PROFILE"
DAGSTER_PG_URL_ENV = "RECLOOP_DAGSTER_PG_URL"
REDIS_URL_ENV = "RECLOOP_REDIS_URL"
FEAST_REGISTRY_URL_ENV = "RECLOOP_FEAST_REGISTRY_URL"
REGISTRY_URL_ENV = "RECLOOP_REGISTRY_URL"
PARTITIONS_START_ENV = "RECLOOP_PARTITIONS_START"
FEAST_PROJECT_ENV = "RECLOOP_FEAST_PROJECT"
DRIFT_WINDOW_ENV = "RECLOOP_DRIFT_WINDOW"
RETRAIN_AFTER_EVENTS_ENV = "RECLOOP_RETRAIN_AFTER_EVENTS"
POST_DRIFT_IMPRESSIONS_ENV = "RECLOOP_POST_DRIFT_IMPRESSIONS"
RELOAD_INTERVAL_ENV = "RECLOOP_RELOAD_INTERVAL_S"
EXPERIMENTS_DIR_ENV = "RECLOOP_EXPERIMENTS_DIR"
API_KEY_ENV = "RECLOOP_API_KEY"
TENANT_API_KEYS_ENV = "RECLOOP_TENANT_API_KEYS"
ACTOR_ENV = "RECLOOP_ACTOR"
CHAMPION_ALGORITHM_ENV = "RECLOOP_CHAMPION_ALGORITHM"
SERVICE_WORKERS_ENV = "RECLOOP_SERVICE_WORKERS"
REQUEST_STATE_ENV = "RECLOOP_REQUEST_STATE"

DEFAULT_DATA_DIR = Path("data")
DEFAULT_REDIS_URL = "127.0.0.1:6379"
DEFAULT_EXPERIMENTS_DIR = Path("experiments")
# What the champion chain may train: the registered algorithms the promotion gates judge
# (recloop.experiments.algorithms registers them; a unit test keeps the two in step).
CHAMPION_ALGORITHMS = ("two_tower", "ease", "multi_stage")
# The multi-stage recommender: on a user's own positives-only log it passes the gates and,
# asked over HTTP, serves held-out items 1.05-1.09x as well as EASE, which the two-tower
# does not reach (README, "make bench-served"); online it beats popularity by 44 %.
DEFAULT_CHAMPION_ALGORITHM = "multi_stage"
# MovieLens-100K, the demo data set, starts on 1997-09-20.


@dataclass(frozen=True)
class EnvVariable:
    """One `RECLOOP_*` variable: a row of the README's settings table."""

    name: str
    # The value an unset variable stands for, written as one would set it; None when
    # unset means "none" (the README shows "unset" and `meaning` says what happens then).
    default: str | None
    meaning: str


# `local`: everything embedded in the data directory; `scale`: the engines a team already
# runs, Dagster's storage on PostgreSQL and the online store on Redis.
PROFILES = ("local", "scale")
Profile = Literal["local", "scale"]

ENV_VARIABLES: tuple[EnvVariable, ...] = (
    EnvVariable(DATA_DIR_ENV, "./data", "the data directory"),
    EnvVariable(
        PROFILE_ENV,
        "local",
        "local (embedded: SQLite, files) or scale (Dagster storage on PostgreSQL, Redis "
        "online store); `make` copies `deploy/<profile>/dagster.yaml` to a new DAGSTER_HOME",
    ),
    EnvVariable(
        DAGSTER_PG_URL_ENV,
        None,
        "the scale profile's Dagster database, postgresql://user:password@host:5432/db",
    ),
    EnvVariable(
        ONLINE_STORE_ENV, "sqlite", "Feast's online store: sqlite or redis (scale profile: redis)"
    ),
    EnvVariable(
        REDIS_URL_ENV,
        DEFAULT_REDIS_URL,
        "Redis connection string (Feast's format, host:port[,password=...]): the online "
        "store and the service's shared request state",
    ),
    EnvVariable(
        SERVICE_WORKERS_ENV,
        "1",
        "the service's worker processes; more than one needs RECLOOP_REQUEST_STATE=redis",
    ),
    EnvVariable(
        REQUEST_STATE_ENV,
        "memory",
        "where the service keeps served lists, the feedback ledger and fresh stream features: "
        "memory (one process) or redis (shared by every worker; scale profile: redis)",
    ),
    EnvVariable(
        FEAST_REGISTRY_URL_ENV,
        None,
        "Feast's SQL registry, e.g. postgresql+psycopg2://user:password@host:5432/feast; "
        "unset: a SQLite file in the data directory",
    ),
    EnvVariable(
        REGISTRY_URL_ENV,
        None,
        "the model registry's promotion and deployment logs in PostgreSQL, "
        "postgresql://user:password@host:5432/db; unset: files beside the models",
    ),
    EnvVariable(
        PARTITIONS_START_ENV,
        None,
        "first day of the daily event partitions; unset: the first day in the raw event log",
    ),
    EnvVariable(FEAST_PROJECT_ENV, "recloop", "Feast project"),
    EnvVariable(API_KEY_ENV, None, "when set, the X-API-Key the service requires; else no auth"),
    EnvVariable(
        TENANT_API_KEYS_ENV,
        None,
        'keys scoped to one tenant, as JSON: {"<tenant>": "<key>", ...}',
    ),
    EnvVariable(DRIFT_WINDOW_ENV, "3000", "impressions per drift window"),
    EnvVariable(RETRAIN_AFTER_EVENTS_ENV, "50000", "new validated events that trigger a retrain"),
    EnvVariable(
        POST_DRIFT_IMPRESSIONS_ENV,
        "50000",
        "impressions served after a drift began before its retrain",
    ),
    EnvVariable(RELOAD_INTERVAL_ENV, "2", "seconds between the service's looks at the registry"),
    EnvVariable(EXPERIMENTS_DIR_ENV, "./experiments", "the live experiment specs"),
    EnvVariable(ACTOR_ENV, None, "the actor the registry's audit logs record; else login name"),
    EnvVariable(
        CHAMPION_ALGORITHM_ENV,
        DEFAULT_CHAMPION_ALGORITHM,
        "what the champion chain trains: " + ", ".join(CHAMPION_ALGORITHMS),
    ),
)


class SettingsError(ValueError):
    """An environment variable holds a value recloop cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which engines serve it."""

    data_dir: Path
    online_store: OnlineStoreKind = "sqlite"
    profile: Profile = "local"
    redis_url: str = DEFAULT_REDIS_URL
    # None: feature_repo's SQLite registry file under the data directory.
    feast_registry_url: str | None = None
    # None: the registry's decision logs are files beside its models (one machine).
    registry_url: str | None = None
    # The first day of the daily event partitions; None: the first day of the raw log.
    partitions_start: date | None = None
    feast_project: str = "recloop"
    # Impressions per drift window (recloop.monitoring.drift_report), new events that trigger a retrain,
    # and impressions collected after a drift before its retrain (assets.monitoring); the
    # README's "The closed loop" section explains them.
    drift_window: int = 3_000
    retrain_after_events: int = 50_000
    post_drift_impressions: int = 50_000
    # Seconds between two looks of the service at the registry's champion (hot swap).
    reload_interval_s: float = 2.0
    # The live experiment specs (`*.yaml` at its top level; experiments/README.md).
    experiments_dir: Path = DEFAULT_EXPERIMENTS_DIR
    # The key the service requires in `X-API-Key` on its protected routes; None: no auth.
    # A secret: left out of `repr` and of `to_env`.
    api_key: str | None = field(default=None, repr=False)
    # Keys that act for one tenant only (tenant -> key); also secrets.
    tenant_api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The algorithm `model_candidate` trains; the gates decide whether it becomes champion.
    champion_algorithm: str = DEFAULT_CHAMPION_ALGORITHM
    # The service's worker processes, and where their request state lives (shared by
    # every worker only in Redis).
    service_workers: int = 1
    request_state: RequestStateKind = "memory"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, required: tuple[str, ...] = ()
    ) -> Settings:
        """Build settings from `RECLOOP_*` variables; unset ones take defaults, except
        those named in `required`, which must be set and not empty."""
        env = os.environ if env is None else env
        missing = [variable for variable in required if not env.get(variable)]
        if missing:
            raise SettingsError(f"{', '.join(missing)}: must be set")
        data_dir = Path(env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()
        experiments_dir = (
            Path(env.get(EXPERIMENTS_DIR_ENV) or DEFAULT_EXPERIMENTS_DIR).expanduser().resolve()
        )
        profile = (env.get(PROFILE_ENV) or "local").strip().lower()
        if profile not in PROFILES:
            raise SettingsError(f"{PROFILE_ENV}={profile!r}: expected 'local' (default) or 'scale'")
        default_store = "redis" if profile == "scale" else "sqlite"
        online_store = (env.get(ONLINE_STORE_ENV) or default_store).strip().lower()
        if online_store not in ("sqlite", "redis"):
            raise SettingsError(
                f"{ONLINE_STORE_ENV}={online_store!r}: expected 'sqlite' (default) or 'redis'"
            )
        default_state = "redis" if profile == "scale" else "memory"
        request_state = (env.get(REQUEST_STATE_ENV) or default_state).strip().lower()
        if request_state not in ("memory", "redis"):
            raise SettingsError(
                f"{REQUEST_STATE_ENV}={request_state!r}: expected 'memory' (default) or 'redis'"
            )
        workers = _positive_int(env, SERVICE_WORKERS_ENV, cls.service_workers)
        if workers > 1 and request_state != "redis":
            raise SettingsError(
                f"{SERVICE_WORKERS_ENV}={workers} needs {REQUEST_STATE_ENV}=redis: workers "
                "must share the served lists, or feedback reaching another worker is refused"
            )
        start_text = env.get(PARTITIONS_START_ENV)
        try:
            start = date.fromisoformat(start_text) if start_text else None
        except ValueError as exc:
            raise SettingsError(
                f"{PARTITIONS_START_ENV}={start_text!r}: expected a date like 1997-09-01"
            ) from exc
        counts = {
            name: _positive_int(env, variable, default)
            for name, variable, default in (
                ("drift_window", DRIFT_WINDOW_ENV, cls.drift_window),
                ("retrain_after_events", RETRAIN_AFTER_EVENTS_ENV, cls.retrain_after_events),
                ("post_drift_impressions", POST_DRIFT_IMPRESSIONS_ENV, cls.post_drift_impressions),
            )
        }
        return cls(
            **counts,
            reload_interval_s=_positive_float(env, RELOAD_INTERVAL_ENV, cls.reload_interval_s),
            data_dir=data_dir,
            experiments_dir=experiments_dir,
            online_store=online_store,  # type: ignore[arg-type]
            profile=profile,  # type: ignore[arg-type]
            redis_url=env.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL,
            feast_registry_url=env.get(FEAST_REGISTRY_URL_ENV) or None,
            registry_url=env.get(REGISTRY_URL_ENV) or None,
            partitions_start=start,
            feast_project=env.get(FEAST_PROJECT_ENV) or "recloop",
            api_key=api_key_from_env(env),
            tenant_api_keys=tenant_api_keys_from_env(env),
            champion_algorithm=_champion_algorithm(env),
            service_workers=workers,
            request_state=request_state,  # type: ignore[arg-type]
        )

    def to_env(self) -> dict[str, str]:
        """The `RECLOOP_*` variables that rebuild these settings in another process.

        All but the API key: a secret is not handed to every child process (Dagster
        runs, dbt, the service's own children); the service reads it from its environment.
        """
        return {
            DATA_DIR_ENV: str(self.data_dir),
            ONLINE_STORE_ENV: self.online_store,
            PROFILE_ENV: self.profile,
            REDIS_URL_ENV: self.redis_url,
            FEAST_REGISTRY_URL_ENV: self.feast_registry_url or "",
            REGISTRY_URL_ENV: self.registry_url or "",
            # Empty: the child derives the start from the raw log, as this process does.
            PARTITIONS_START_ENV: self.partitions_start.isoformat()
            if self.partitions_start
            else "",
            FEAST_PROJECT_ENV: self.feast_project,
            DRIFT_WINDOW_ENV: str(self.drift_window),
            RETRAIN_AFTER_EVENTS_ENV: str(self.retrain_after_events),
            POST_DRIFT_IMPRESSIONS_ENV: str(self.post_drift_impressions),
            RELOAD_INTERVAL_ENV: str(self.reload_interval_s),
            EXPERIMENTS_DIR_ENV: str(self.experiments_dir),
            CHAMPION_ALGORITHM_ENV: self.champion_algorithm,
            SERVICE_WORKERS_ENV: str(self.service_workers),
            REQUEST_STATE_ENV: self.request_state,
        }


def api_key_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """`RECLOOP_API_KEY`; None when it is unset or empty (no auth)."""
    env = os.environ if env is None else env
    return env.get(API_KEY_ENV) or None


def tenant_api_keys_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`RECLOOP_TENANT_API_KEYS`: tenant -> the key scoped to it ({} when unset)."""
    env = os.environ if env is None else env
    text = env.get(TENANT_API_KEYS_ENV) or ""
    if not text.strip():
        return {}
    try:
        keys = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f'{TENANT_API_KEYS_ENV}: not JSON ({exc.msg}); write {{"<tenant>": "<key>"}}'
        ) from None
    if not isinstance(keys, dict) or not all(
        isinstance(t, str) and isinstance(k, str) and t and k for t, k in keys.items()
    ):
        raise SettingsError(
            f'{TENANT_API_KEYS_ENV}: must be a JSON object of non-empty strings, {{"<tenant>": '
            '"<key>"}'
        )
    if len(set(keys.values())) != len(keys):
        raise SettingsError(f"{TENANT_API_KEYS_ENV}: two tenants share a key")
    return keys


def actor_from_env(env: Mapping[str, str] | None = None) -> str:
    """Who acts, for audit logs: `RECLOOP_ACTOR`, else the login name."""
    env = os.environ if env is None else env
    return env.get(ACTOR_ENV) or getpass.getuser()


def _champion_algorithm(env: Mapping[str, str]) -> str:
    algorithm = (env.get(CHAMPION_ALGORITHM_ENV) or DEFAULT_CHAMPION_ALGORITHM).strip().lower()
    if algorithm not in CHAMPION_ALGORITHMS:
        raise SettingsError(
            f"{CHAMPION_ALGORITHM_ENV}={algorithm!r}: expected one of {', '.join(CHAMPION_ALGORITHMS)}"
        )
    return algorithm


def _positive_int(env: Mapping[str, str], variable: str, default: int) -> int:
    text = env.get(variable)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{variable}={text!r}: expected a positive whole number")
    return int(text)


def _positive_float(env: Mapping[str, str], variable: str, default: float) -> float:
    text = env.get(variable)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise SettingsError(f"{variable}={text!r}: expected a number, e.g. 2") from exc
    if not value > 0:
        raise SettingsError(f"{variable}={text!r}: expected a positive number")
    return value
