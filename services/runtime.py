"""What the recommendation service holds and does, without BentoML.

`RecloopRuntime` owns every tenant's served champion (each hot-swapped on its own from
the registry by a watcher thread, which also reloads the online experiments; a tenant
promoted for the first time is served from the next look, without a restart), the event buffer and its writer
thread (which pushes fresh stream features to Feast once their events are on disk),
and the served lists that feedback must answer. services/service.py is the HTTP
layer over it: the endpoints call these methods and turn `Refused` into an error
answer. Kept free of BentoML so the serving logic reads (and runs) on its own.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pandas as pd
import torch
from feast.data_source import PushMode

from feature_repo.definitions import STREAM_PUSH_SOURCE
from feature_repo.store import (
    STORE_ERRORS,
    online_store_problem,
    online_user_features,
    open_feature_store,
)
from recloop.data.event_log import (
    EventBuffer,
    ServedList,
    ServedLists,
    feedback_problem,
    feedback_row,
    impression_rows,
    logged_served_lists,
)
from recloop.data.layout import DataLayout, check_tenant_id
from recloop.data.shared_state import RedisServedLists, RequestStateUnavailable, redis_client
from recloop.experiments import Route
from recloop.experiments.serving import VariantList, serve_route
from recloop.features.feature_vectors import STREAM_VIEW, FeatureColumns
from recloop.features.shared_stream_state import SharedStreamState
from recloop.features.stream_features import (
    ROW_COLUMNS,
    WINDOW,
    StreamState,
    recent_engagement_events,
)
from recloop.inference.retrievers import (
    Recommendation,
    Servable,
    SimilarItems,
    UnknownItemError,
    servable,
)
from recloop.registry.model_registry import Registry, model_tenant
from recloop.settings import Settings
from services.api import (
    EventStats,
    ExperimentStats,
    FlushResponse,
    ModelStats,
    OnlineStoreStats,
    RankedItem,
    RecommendResponse,
    SimilarItemsResponse,
    StatsResponse,
)
from services.experiments import BatchLists, ExperimentLoader, ExperimentSet

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_VARIANT = "champion"
EVENT_FLUSH_SECONDS = 1.0
# A durable /feedback answers 503 if its batch is not on disk by then (the request
# timeout, services/serving_stack.py, is 10 s).
DURABLE_TIMEOUT_S = 5.0


class EventCounters:
    """Prometheus counters (/metrics) of event rows accepted and durably written."""

    def __init__(self) -> None:
        # Imported here, not at the top: prometheus_client picks its multiprocess mode
        # when imported, and BentoML's worker sets PROMETHEUS_MULTIPROC_DIR after it
        # has imported this module.
        import prometheus_client

        self.accepted = prometheus_client.Counter(
            "recloop_events_accepted", "Event rows the service accepted (impressions, feedback)"
        )
        self.written = prometheus_client.Counter(
            "recloop_events_written", "Event rows written to fsync'd raw-log files"
        )


@functools.cache
def event_counters() -> EventCounters:
    """The process's event counters: Prometheus registers a name once per process, and a
    process may build more than one runtime (the integration tier builds several)."""
    return EventCounters()


@dataclass(frozen=True)
class Champion:
    """The model being served (of any registered kind) and the tenant its events are
    logged under, swapped as one."""

    retriever: Servable
    tenant: str


@dataclass(frozen=True)
class LoadFailure:
    """A tenant's registry champion that failed to load (the previous one serves)."""

    version: str
    error: str


class ChampionLoadError(RuntimeError):
    """Some tenants' champions failed to load; the others were swapped in."""


class Refused(Exception):
    """A request the runtime does not serve: the HTTP status and the message the
    service answers with (an {"error": message} body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


NO_CHAMPION = "no champion model yet: run the train_and_promote job (or `make demo`)"
# /readyz and every /recommend ask for the online store's health; it is probed at most
# this often, and an outage is logged when it starts, when it ends and this often between.
STORE_PROBE_INTERVAL_S = 1.0
OUTAGE_LOG_INTERVAL_S = 60.0


class StoreHealth:
    """A store's health as the last probe (or failed read) found it: the online store's,
    or the request state's in Redis."""

    def __init__(
        self,
        probe: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
        name: str = "the online store",
    ) -> None:
        self.name = name
        self.probe = probe
        self.clock = clock
        self._problem: str | None = None
        self._probed_at = -float("inf")
        self._logged_at = -float("inf")
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why the store cannot answer (None: it can), probing it if the last look is older
        than STORE_PROBE_INTERVAL_S."""
        with self._lock:
            if self.clock() - self._probed_at >= STORE_PROBE_INTERVAL_S:
                self._record(self.probe())
            return self._problem

    def failed(self, problem: str) -> None:
        """A read or push failed between probes: the store is down until a probe says not."""
        with self._lock:
            self._record(problem)

    def _record(self, problem: str | None) -> None:
        now = self.clock()
        self._probed_at = now
        if problem is None:
            if self._problem is not None:
                logger.warning("%s answers again", self.name)
        elif self._problem is None or now - self._logged_at >= OUTAGE_LOG_INTERVAL_S:
            logger.error("%s (the service answers 503 until it is back)", problem)
            self._logged_at = now
        self._problem = problem


def _items(
    result: Recommendation, served: ServedList | None = None, model_version: str | None = None
) -> list[RankedItem]:
    """The response's items; each credited to the model of its position in `served`, or
    to `model_version` (a list no one is credited for, e.g. similar items)."""
    return [
        RankedItem(
            item_id=item_id,
            score=round(score, 6),
            position=position,
            model_version=served.version_at(position) if served else model_version,
            variant=served.variant_at(position) if served else None,
        )
        for position, (item_id, score) in enumerate(
            zip(result.item_ids, result.scores, strict=True)
        )
    ]


def _joined(values: list[str]) -> str:
    """Distinct values in order of first appearance, '+'-joined."""
    return "+".join(dict.fromkeys(values))


def refused_while_request_state_is_down(method: Callable[..., T]) -> Callable[..., T]:
    """A request-path method that answers 503, naming the problem, while Redis (holding
    the request state) does not answer."""

    @functools.wraps(method)
    def answer(runtime: RecloopRuntime, *args: Any, **kwargs: Any) -> T:
        try:
            return method(runtime, *args, **kwargs)
        except RequestStateUnavailable as error:
            runtime.request_state_health.failed(str(error))
            raise Refused(503, str(error)) from error

    return answer


def request_state(
    settings: Settings,
) -> tuple[ServedLists | RedisServedLists, StreamState | SharedStreamState]:
    """The served lists feedback is checked against, and the fresh user features
    (recloop.features.stream_features, pushed by the flusher thread through a store of
    its own, so pushes never share the request path's connection): in this process, or
    in Redis when several workers must share them (RECLOOP_REQUEST_STATE)."""
    if settings.request_state == "memory":
        return ServedLists(), StreamState()
    client = redis_client(settings.redis_url)
    namespace = f"recloop:{settings.feast_project}"
    return RedisServedLists(client, namespace), SharedStreamState(client, namespace)


class RecloopRuntime:
    """The service's state and background work; `start` runs its two threads."""

    def __init__(self) -> None:
        # One request is one small forward pass: intra-op threads only contend.
        torch.set_num_threads(1)
        self.settings = Settings.from_env()
        self.layout = DataLayout(self.settings.data_dir)
        self.registry = Registry.of(self.settings)
        self.store = open_feature_store(self.settings)
        self.store_health = StoreHealth(functools.partial(online_store_problem, self.store))
        self.counters = event_counters()
        self.events = EventBuffer(self.layout, on_written=self.counters.written.inc)
        self.served, self.stream = request_state(self.settings)
        self.request_state_health = StoreHealth(self.served.problem, name="the request state")
        self.restored_served_lists = 0
        self.stream_store = open_feature_store(self.settings)
        # tenant -> its champion; a dict replaced whole, so a request reads one snapshot.
        self.champions: dict[str, Champion] = {}
        # Online tests (services/experiments.py): reloaded by the watcher thread.
        self.experiment_loader = ExperimentLoader(self.settings.experiments_dir, self.registry)
        self.experiments = ExperimentSet.empty()
        self.batch_lists = BatchLists(self.store)
        self.swaps = 0
        self.load_failures = 0
        self.failures: dict[str, LoadFailure] = {}
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        """Load every tenant's champion, then start the registry watcher and the event
        writer (daemon threads).

        Loading before the worker takes requests: BentoML builds the service before its
        worker accepts connections, and with several workers behind one port the others
        take them meanwhile; loading in the background, a started or respawned worker
        answered 503 "still loading" to its share of the traffic. A champion that fails
        to load is recorded (/readyz and /admin/stats say why) and the worker starts
        anyway, serving its other tenants.
        """
        try:
            self.reload()
        except ChampionLoadError as error:
            logger.error("serving without these champions: %s", error)
        threading.Thread(target=self._watch_registry, daemon=True).start()
        threading.Thread(target=self._flush_periodically, daemon=True).start()

    def reload(self, tenant: str | None = None, retry_failed: bool = True) -> dict[str, str]:
        """Load each tenant's registry champion (only `tenant`'s when named) beside the one
        serving, then swap it in; the champions serving, by tenant.

        Requests in flight keep the `Champion` they read; new ones see the new one. A
        load that fails leaves that tenant's current champion serving (the others are
        swapped all the same); the error is kept for /admin/stats, and for the 503
        answers while nothing serves the tenant, and raised as ChampionLoadError once
        every tenant was tried. A version that failed is tried again only when
        `retry_failed`.
        """
        with self._reload_lock:
            wanted = self.registry.champions()
            if tenant is not None:
                wanted = {tenant: wanted[tenant]} if tenant in wanted else {}
            errors = []
            for name, version in sorted(wanted.items()):
                current = self.champions.get(name)
                if current is not None and current.retriever.version == version:
                    self.failures.pop(name, None)
                    continue
                failure = self.failures.get(name)
                if not retry_failed and failure is not None and failure.version == version:
                    continue
                try:
                    champion = self._load(version, name)
                    if current is None and not self.served.shared:
                        self._restore_served(name)
                        self._restore_stream(name)
                except Exception as exc:
                    self.load_failures += 1
                    self.failures[name] = LoadFailure(version, f"{type(exc).__name__}: {exc}")
                    errors.append(f"{name}: {version}: {self.failures[name].error}")
                    continue
                self.champions = {**self.champions, name: champion}
                self.swaps += 1
                self.failures.pop(name, None)
            if errors:
                raise ChampionLoadError("; ".join(errors))
            return {
                name: c.retriever.version
                for name, c in sorted(self.champions.items())
                if tenant is None or name == tenant
            }

    def _load(self, version: str, tenant: str) -> Champion:
        model = self.registry.load(version)
        trained_for = check_tenant_id(model_tenant(model.metadata, version))
        if trained_for != tenant:
            raise ValueError(f"{version} was trained for tenant {trained_for!r}, not {tenant!r}")
        return Champion(servable(model), tenant)

    def _restore_served(self, tenant: str) -> None:
        """Let feedback answer responses given before a restart or a crash: rebuild the
        served lists from today's and yesterday's impression batches."""
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=1), today]
        restored = logged_served_lists(self.layout, tenant, days, self.served.capacity)
        for served in restored:
            self.served.remember(served)
        self.restored_served_lists += len(restored)

    def _restore_stream(self, tenant: str) -> None:
        """Replay recent engagement events into the stream state before the champion (and
        so feedback) is published, so rows pushed after a restart count the events from
        before it. Two hours: a replayed user's row looks back an hour from their latest
        event, itself up to an hour old. Replayed users are pushed again, which repairs a
        push lost to a crash between flush and push."""
        now = datetime.now(UTC)
        days = [now.date() - timedelta(days=1), now.date()]
        partitions = [self.layout.raw_events_partition(tenant, day) for day in days]
        self.stream.add_frame(recent_engagement_events(partitions, now, window=2 * WINDOW))

    def _watch_registry(self) -> None:
        """Serve what the promotion log names: each tenant's first champion, then every
        promotion or rollback; and the experiment specs and their deployed variants as they
        change. A version that failed to load is retried only by /admin/reload."""
        while True:
            try:
                self.reload(retry_failed=False)
            except Exception:
                logger.exception(
                    "could not swap in every registry champion; serving %s", self._serving()
                )
            try:
                self.experiments = self.experiment_loader.refresh(self.experiments)
            except Exception:
                logger.exception("could not reload the experiments; the previous ones stay live")
            if self._stop.wait(self.settings.reload_interval_s):
                return

    def _serving(self) -> dict[str, str]:
        return {name: c.retriever.version for name, c in self.champions.items()}

    def _flush_periodically(self) -> None:
        while not self._stop.is_set():
            # Drained before the flush and pushed after it, so a pushed value only counts
            # events that are on disk (feedback adds to the buffer before the stream).
            stream_rows = self._drain_stream()
            try:
                self.events.flush_when_due(EVENT_FLUSH_SECONDS)
            except Exception:
                # The rows stay buffered for the next flush and /admin/stats shows the error.
                logger.exception("writing events to the raw log failed; retrying")
                self.stream.requeue(stream_rows)
                self._stop.wait(EVENT_FLUSH_SECONDS)
                continue
            self._push_stream(stream_rows)

    def _push_stream(self, rows: pd.DataFrame) -> None:
        """Push drained stream rows to Feast's online store (the flusher thread, never the
        request path); rows that fail go back to the state for the next tick."""
        if rows.empty:
            return
        try:
            self.stream_store.push(STREAM_PUSH_SOURCE, rows, to=PushMode.ONLINE)
        except STORE_ERRORS as error:
            # An outage: one line, rate-limited by the health record, not a traceback a tick.
            self.store_health.failed(f"pushing stream features to the online store failed: {error}")
            self.stream.requeue(rows)
        except Exception:
            logger.exception("pushing %d stream feature rows to Feast failed; retrying", len(rows))
            self.stream.requeue(rows)

    def _log_events(self, rows: list[dict[str, object]]) -> int:
        """Buffer rows for the raw log; the sequence number of the last one."""
        seq = self.events.add(rows)
        self.counters.accepted.inc(len(rows))
        return seq

    def _drain_stream(self) -> pd.DataFrame:
        """The stream rows to push; none while the request state is unavailable (the
        users' rows wait there for the next drain, and the events are written all the
        same)."""
        try:
            return self.stream.drain()
        except RequestStateUnavailable as error:
            self.request_state_health.failed(str(error))
            return pd.DataFrame(columns=ROW_COLUMNS)

    def close(self) -> None:
        """Stop the threads, write what is buffered and push its stream rows."""
        self._stop.set()
        stream_rows = self._drain_stream()
        self.events.flush()
        self._push_stream(stream_rows)

    def is_ready(self) -> bool:
        """A champion is loaded, and the online store and the request state answer
        (BentoML's /readyz)."""
        return (
            bool(self.champions)
            and self.store_health.problem() is None
            and self.request_state_health.problem() is None
        )

    def tenant(self, named: str | None, key_tenant: str | None = None) -> str:
        """The tenant a request is for: the one it names (`tenant` field or X-Tenant
        header), else its API key's, else the only tenant served. Refused: 403 when the
        key is scoped to another tenant, 422 when several tenants are served and none is
        named, 503 while none is."""
        if named is not None and key_tenant is not None and named != key_tenant:
            raise Refused(403, f"this API key is scoped to tenant {key_tenant!r}, not {named!r}")
        chosen = named or key_tenant
        if chosen is not None:
            return chosen
        served = sorted(self.champions)
        if len(served) == 1:
            return served[0]
        if not served:
            raise Refused(503, self._not_ready(None))
        raise Refused(
            422,
            f"this service serves {len(served)} tenants ({', '.join(served)}): name one in "
            "the X-Tenant header or the `tenant` field",
        )

    def admin_tenant(self, named: str | None, key_tenant: str | None) -> str | None:
        """The tenant an admin request is for: as `tenant`, but None (every tenant) when
        an unscoped key names none; 404 for an unknown tenant."""
        if named is None and key_tenant is None:
            return None
        tenant = self.tenant(named, key_tenant)
        self._check_known(tenant)
        return tenant

    def _check_known(self, tenant: str) -> None:
        """404 unless the tenant is served, has a champion or has a raw log."""
        if tenant in self.champions:
            return
        if tenant in self.registry.champion_tenants() or tenant in self.layout.tenants():
            return
        known = ", ".join(sorted(self.champions)) or "none yet"
        raise Refused(404, f"unknown tenant {tenant!r}: this service serves {known}")

    def _ready_champion(self, tenant: str) -> Champion:
        """The tenant's champion to answer with; 404 for a tenant the service does not
        know, 503 while its champion is not loaded, saying why."""
        champion = self.champions.get(tenant)
        if champion is not None:
            return champion
        self._check_known(tenant)
        raise Refused(503, self._not_ready(tenant))

    def _not_ready(self, tenant: str | None) -> str:
        failure = self.failures.get(tenant) if tenant else next(iter(self.failures.values()), None)
        if failure is not None:
            return f"the champion failed to load: {failure.error}"
        if tenant is not None and self.registry.champion(tenant) is None:
            return f"tenant {tenant!r} has {NO_CHAMPION}"
        if tenant is None and not self.registry.champions():
            return NO_CHAMPION
        return "the champion is still loading"

    def _user_features(self, tenant_id: str, user_id: str, now: datetime) -> FeatureColumns:
        """One row of the user's online features as of `now`, as Feast's dict of lists;
        values older than their view's ttl (an hour for streaming ones, 30 days for daily
        ones) are null, as in the training set's point-in-time join. The streaming ones
        come from this process's stream state when it holds the user: the online store
        gets them only once their events are on disk, so a click would otherwise miss
        the next request, and a replay of the log would rank it differently."""
        problem = self.store_health.problem()
        if problem is not None:
            raise Refused(503, problem)
        try:
            features = online_user_features(self.store, tenant_id, [user_id], now)
        except STORE_ERRORS as error:
            problem = f"reading the online store failed: {error}"
            self.store_health.failed(problem)
            raise Refused(503, problem) from error
        fresh = self.stream.features_as_of(tenant_id, user_id, now)
        for column, value in (fresh or {}).items():
            features[f"{STREAM_VIEW}__{column}"] = [value]
        return features

    @refused_while_request_state_is_down
    def recommend(
        self,
        tenant: str,
        user_id: str,
        k: int,
        exclude: list[str],
        context: dict[str, Any],
        dry_run: bool = False,
    ) -> RecommendResponse:
        """The champion's list, or the routed experiment's; remembered and logged, unless
        `dry_run` (a trial: nothing is logged or remembered)."""
        champion = self._ready_champion(tenant)
        retriever, experiments = champion.retriever, self.experiments
        now = datetime.now(UTC)
        route = None
        if experiments.router.specs:
            events = (
                retriever.interactions(user_id) if experiments.router.needs_user_events else None
            )
            route = experiments.router.route(user_id, champion.tenant, context, events, now)
        request_id = uuid.uuid4().hex
        # Read for every user: the user tower places one it has no history of from these.
        features = self._user_features(champion.tenant, user_id, now)
        if route is None:
            result = retriever.recommend(user_id, features, k, exclude)
            served = ServedList(
                request_id=request_id,
                tenant_id=champion.tenant,
                user_id=user_id,
                item_ids=tuple(result.item_ids),
                model_version=retriever.version,
                variant=DEFAULT_VARIANT,
            )
        else:
            result, served = self._experiment_list(
                route, champion, features, user_id, k, exclude, request_id, now
            )
        if not dry_run:
            self.served.remember(served)
            self._log_events(impression_rows(served, result.scores, now))
        return RecommendResponse(
            request_id=request_id,
            model_version=served.model_version,
            variant=served.variant,
            experiment=route.experiment if route else None,
            fallback=result.fallback,
            dry_run=dry_run,
            items=_items(result, served),
        )

    def _experiment_list(
        self,
        route: Route,
        champion: Champion,
        features: FeatureColumns,
        user_id: str,
        k: int,
        exclude: list[str],
        request_id: str,
        now: datetime,
    ) -> tuple[Recommendation, ServedList]:
        """The routed variants' list (services/experiments.py, recloop.experiments.serving)."""
        sources = self.experiments.sources

        def variant_list(variant: str, size: int) -> VariantList:
            return sources[(route.experiment, variant)].list_for(
                champion.retriever,
                self.batch_lists,
                champion.tenant,
                user_id,
                features,
                size,
                exclude,
                request_id,
                now,
            )

        response = serve_route(route, variant_list, k, request_id)
        served = ServedList(
            request_id=request_id,
            tenant_id=champion.tenant,
            user_id=user_id,
            item_ids=tuple(response.item_ids),
            model_version=_joined(response.item_versions) or champion.retriever.version,
            variant=_joined(list(route.labels)),
            item_versions=tuple(response.item_versions),
            item_variants=tuple(response.item_variants),
            propensities=tuple(response.propensities),
        )
        return Recommendation(response.item_ids, response.scores, None), served

    @refused_while_request_state_is_down
    def feedback(
        self,
        tenant: str,
        request_id: str,
        user_id: str,
        item_id: str,
        event_type: str,
        value: float | None,
    ) -> tuple[int, bool]:
        """Log feedback on a served list and count it in the user's stream features; the
        event's sequence number, and whether it is a repeat (the same request, item, event
        type and value as feedback accepted before: acknowledged with the first one's
        sequence number, not logged again). Refused (404, 422) unless it matches what was
        shown; another tenant's request is unknown to this one (404)."""
        self._ready_champion(tenant)
        served = self.served.get(request_id)
        if served is not None and served.tenant_id != tenant:
            served = None
        problem = feedback_problem(served, request_id, user_id, item_id, event_type, value)
        if problem is not None:
            raise Refused(*problem)
        key = (request_id, item_id, event_type, value)
        first = self.served.claim_feedback(key)
        if first is not None:
            return first, True
        row = feedback_row(served, item_id, event_type, value, datetime.now(UTC))
        seq = self._log_events([row])
        self.served.record_feedback(key, seq)
        self.stream.add([row])
        return seq, False

    def wait_durable(self, seq: int) -> None:
        """Block until event `seq` is on disk; refused (503) after DURABLE_TIMEOUT_S, the
        event staying buffered."""
        if not self.events.wait_durable(seq, DURABLE_TIMEOUT_S):
            raise Refused(
                503,
                f"the event was accepted but is not on disk after {DURABLE_TIMEOUT_S:.0f} s "
                f"(last write error: {self.events.last_error}); it stays buffered, do not resend",
            )

    def similar_items(self, tenant: str, item_id: str, k: int) -> SimilarItemsResponse:
        """The tenant's champion's nearest items to `item_id`; refused (404) for an unknown
        item, (501) when the champion's kind ranks no similar items (popularity)."""
        retriever = self._ready_champion(tenant).retriever
        if not isinstance(retriever, SimilarItems):
            raise Refused(501, f"the champion {retriever.version} ranks no similar items")
        try:
            result = retriever.similar_items(item_id, k)
        except UnknownItemError:
            raise Refused(404, f"unknown item_id {item_id!r}") from None
        return SimilarItemsResponse(
            item_id=item_id,
            model_version=retriever.version,
            items=_items(result, model_version=retriever.version),
        )

    def flush(self) -> FlushResponse:
        """Write the buffered events now: the files written, and the rows since start."""
        files = [str(path) for path in self.events.flush()]
        return FlushResponse(files=files, written=self.events.written)

    def stats(self, tenant: str | None) -> StatsResponse:
        """Event counts, the tenant's model (every tenant's, unnamed), experiments and
        served lists, for /admin/stats."""
        events = self.events.stats()
        registry = self.registry.champions()
        tenants = (
            [tenant] if tenant is not None else sorted(registry.keys() | self.champions.keys())
        )
        return StatsResponse(
            events=EventStats(
                accepted=events.accepted,
                written=events.written,
                durable_seq=events.durable_seq,
                pending=events.pending,
                failed_flushes=events.failed_flushes,
                last_error=events.last_error,
            ),
            models={name: self._model_stats(name, registry.get(name)) for name in tenants},
            swaps=self.swaps,
            load_failures=self.load_failures,
            experiments=ExperimentStats(
                live=[spec.name for spec in self.experiments.router.specs],
                waiting={
                    name: list(reasons)
                    for name, reasons in self.experiments.waiting.items()
                    if reasons
                },
                error=self.experiments.error,
            ),
            online_store=OnlineStoreStats(
                kind=self.settings.online_store, problem=self.store_health.problem()
            ),
            worker=os.getpid(),
            request_state=self.settings.request_state,
            served_lists=len(self.served),
            restored_served_lists=self.restored_served_lists,
        )

    def _model_stats(self, tenant: str, registry_champion: str | None) -> ModelStats:
        champion, failure = self.champions.get(tenant), self.failures.get(tenant)
        return ModelStats(
            serving=champion.retriever.version if champion else None,
            registry_champion=registry_champion,
            failed_version=failure.version if failure else None,
            load_error=failure.error if failure else None,
        )
