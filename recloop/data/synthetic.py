"""A seeded generator of raw event logs at any size, in the raw event contract.

What it models, so that the pipeline and the recommenders have the work real logs give:

- **Power-law users and items.** A user's activity and an item's appeal follow Zipf-like
  weights (`activity_exponent`, `popularity_exponent`): a few heavy users and hits, a
  long tail of both.
- **Tastes.** Each user and item has one of `topics` topics; a shown item matching the
  user's topic is `topic_affinity` times likelier to be clicked. This is the signal a
  recommender can learn and popularity cannot.
- **Sessions of slates.** A session shows a slate of `slate` items drawn by a logging
  policy (Plackett-Luce on item appeal, without replacement). Each impression carries
  the exact probability that the policy put that item at that position given the items
  above it (`propensity`), so off-policy estimators have what they need.
- **Position bias.** A shown item is examined with probability `1 / (1 + position) **
  position_bias`; a click needs examination and interest.
- **Engagement beyond clicks.** A click becomes a purchase with `purchase_rate` and is
  rated (0.5-5 stars, higher for a topic match) with `rating_rate`.
- **Catalog growth.** `initial_catalog` of the items exist on the first day; the rest
  arrive evenly over the days and can only be shown from their first day. An item
  catalog snapshot is written each `snapshot_days`, announcing every item that arrives
  before the next one: an item is in the catalog before it is shown.

Days are generated one at a time, from a seed per day, and written as one Parquet batch
per (tenant, day): memory stays at one day's events whatever the total, and the same
configuration always writes the same log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from recloop.data.event_log import EVENT_SCHEMA
from recloop.data.layout import DataLayout, check_tenant_id, write_table_atomic

SYNTHETIC_BATCH = "synthetic.parquet"
LOGGING_POLICY = "synthetic-logger"
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
OCCUPATIONS = ("student", "engineer", "artist", "educator", "other")


class SyntheticLogError(ValueError):
    """A synthetic log's shape that cannot be generated."""


@dataclass(frozen=True)
class SyntheticLog:
    """The shape of a generated log; `events` is the approximate total (the exact count
    follows from the draws and is reported by `write_synthetic_log`)."""

    events: int
    tenant: str = "synthetic"
    days: int = 30
    first_day: date = date(2026, 1, 1)
    users: int = 0  # 0: events // 200 (about 20 sessions a user)
    items: int = 0  # 0: events // 1000, within [500, 10_000]
    topics: int = 12
    slate: int = 10
    activity_exponent: float = 1.0
    popularity_exponent: float = 0.7
    position_bias: float = 1.0
    click_rate: float = 0.08
    topic_affinity: float = 15.0
    purchase_rate: float = 0.1
    rating_rate: float = 0.3
    initial_catalog: float = 0.7
    snapshot_days: int = 7
    seed: int = 0

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant)
        problems = [
            f"{name} must be positive, got {value}"
            for name, value in (("events", self.events), ("days", self.days), ("slate", self.slate))
            if value < 1
        ]
        if not 0 < self.initial_catalog <= 1:
            problems.append(f"initial_catalog must be in (0, 1], got {self.initial_catalog}")
        if self.item_count < self.slate:
            problems.append(f"{self.item_count} items cannot fill a slate of {self.slate}")
        if problems:
            raise SyntheticLogError("; ".join(problems))

    @property
    def user_count(self) -> int:
        return self.users or max(10, self.events // 200)

    @property
    def item_count(self) -> int:
        return self.items or min(10_000, max(500, self.events // 1000))

    def sessions_for(self, events: int) -> int:
        """Sessions that log about `events` events: a session logs a slate of impressions
        and a few engagements more."""
        per_session = self.slate * (
            1 + 0.5 * self.click_rate * (1 + self.purchase_rate + self.rating_rate)
        )
        return max(1, round(events / per_session))


@dataclass(frozen=True)
class SyntheticWorld:
    """Who the users and items are: drawn once from the seed, shared by every day."""

    user_weights: np.ndarray  # activity, summing to 1
    user_topics: np.ndarray
    item_appeal: np.ndarray  # popularity, before the catalog's growth
    item_topics: np.ndarray
    item_arrival: np.ndarray  # the day index an item is first available

    @classmethod
    def of(cls, log: SyntheticLog) -> SyntheticWorld:
        rng = np.random.default_rng([log.seed, 0])
        users, items = log.user_count, log.item_count
        activity = 1.0 / np.arange(1, users + 1) ** log.activity_exponent
        appeal = 1.0 / np.arange(1, items + 1) ** log.popularity_exponent
        initial = max(log.slate, round(items * log.initial_catalog))
        arrival = np.zeros(items, dtype=np.int64)
        if log.days > 1 and initial < items:
            arrival[initial:] = np.sort(rng.integers(1, log.days, items - initial))
        # Ranks shuffled: the heaviest user or the most appealing item has a random id.
        return cls(
            user_weights=rng.permutation(activity / activity.sum()),
            user_topics=rng.integers(0, log.topics, users),
            item_appeal=appeal[rng.permutation(items)],
            item_topics=rng.integers(0, log.topics, items),
            item_arrival=arrival,
        )


def first_distinct(draws: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `draws`, its first `count` distinct values in draw order, for the rows
    that have that many; and a mask of those rows."""
    order = np.argsort(draws, axis=1, kind="stable")
    ranked = np.take_along_axis(draws, order, axis=1)
    repeat_ranked = np.zeros(draws.shape, dtype=bool)
    repeat_ranked[:, 1:] = ranked[:, 1:] == ranked[:, :-1]  # a stable sort puts the first first
    repeat = np.empty_like(repeat_ranked)
    np.put_along_axis(repeat, order, repeat_ranked, axis=1)
    kept = ~repeat & (np.cumsum(~repeat, axis=1) <= count)
    complete = kept.sum(axis=1) == count
    return draws[complete][kept[complete]].reshape(-1, count), complete


def plackett_luce_slates(
    rng: np.random.Generator, weights: np.ndarray, sessions: int, slate: int
) -> tuple[np.ndarray, np.ndarray]:
    """`sessions` slates of `slate` distinct indices of `weights`, each drawn with
    probability proportional to its weight among those not yet drawn; and each draw's
    probability given the draws above it (the logged propensity).

    Drawing with replacement and skipping repeats draws each next item from the weights
    of those not yet drawn: the first `slate` distinct draws are a Plackett-Luce slate,
    in order. A row whose draws repeat too often to fill its slate draws on (its draws
    so far kept: starting it over would favour slates of rarely repeated items).
    """
    cumulative = np.cumsum(weights)

    def draw(rows: int, width: int) -> np.ndarray:
        uniform = rng.random((rows, width)) * cumulative[-1]
        return np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(weights) - 1)

    chosen = np.empty((sessions, slate), dtype=np.int64)
    pending = np.arange(sessions)
    draws = draw(sessions, 3 * slate)
    while len(pending):
        filled, complete = first_distinct(draws, slate)
        chosen[pending[complete]] = filled
        pending, draws = pending[~complete], draws[~complete]
        draws = np.hstack([draws, draw(len(pending), draws.shape[1])])
    drawn = weights[chosen]
    before = np.cumsum(drawn, axis=1) - drawn
    return chosen, drawn / (weights.sum() - before)


def day_events(
    log: SyntheticLog, world: SyntheticWorld, day_index: int, events: int | None = None
) -> pa.Table:
    """One day of the log as an Arrow table in the raw event contract, from a seed of
    its own (days can be generated in any order). A day past the log's last has the
    whole catalog; `events` (default: the log's daily share) sets its size."""
    rng = np.random.default_rng([log.seed, 1, day_index])
    day = log.first_day + timedelta(days=day_index)
    sessions = log.sessions_for(events or log.events // log.days)
    available = np.flatnonzero(world.item_arrival <= day_index)
    users = rng.choice(len(world.user_weights), size=sessions, p=world.user_weights)
    local, propensity = plackett_luce_slates(rng, world.item_appeal[available], sessions, log.slate)
    shown = available[local]
    positions = np.broadcast_to(np.arange(log.slate), shown.shape)
    match = world.item_topics[shown] == world.user_topics[users][:, None]
    interest = np.minimum(1.0, log.click_rate * np.where(match, log.topic_affinity, 1.0))
    examined = rng.random(shown.shape) < 1.0 / (1.0 + positions) ** log.position_bias
    clicked = examined & (rng.random(shown.shape) < interest)

    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    session_at = np.sort(rng.integers(0, 86_400 * 1_000_000 - 60_000_000, sessions))
    request_ids = np.char.add(f"s{log.seed}-{day_index}-", np.arange(sessions).astype(str))

    per_event = ("event_id", "user_id", "item_id", "event_type", "value", "offset_us")
    rows: dict[str, list[np.ndarray]] = {
        name: [] for name in (*per_event, "request_id", "position", "propensity")
    }

    def add(kind: str, session: np.ndarray, position: np.ndarray, offset_us: int, value) -> None:
        item = shown[session, position]
        rows["event_id"].append(
            np.char.add(np.char.add(request_ids[session], f":{kind}:"), position.astype(str))
        )
        rows["user_id"].append(users[session].astype(str))
        rows["item_id"].append(item.astype(str))
        rows["event_type"].append(np.full(len(session), kind))
        rows["value"].append(value)
        rows["offset_us"].append(session_at[session] + offset_us + position * 1_000_000)
        rows["request_id"].append(request_ids[session])
        rows["position"].append(position)
        rows["propensity"].append(propensity[session, position])

    every = np.indices(shown.shape).reshape(2, -1)
    add("impression", every[0], every[1], 0, np.full(every.shape[1], np.nan))
    session, position = np.nonzero(clicked)
    add("click", session, position, 20_000_000, np.full(len(session), np.nan))
    bought = rng.random(len(session)) < log.purchase_rate
    add(
        "purchase",
        session[bought],
        position[bought],
        40_000_000,
        np.round(rng.lognormal(3.0, 0.8, bought.sum()), 2),
    )
    rated = rng.random(len(session)) < log.rating_rate
    stars = np.clip(
        np.round(rng.normal(np.where(match[session, position], 4.2, 2.8), 0.8) * 2) / 2, 0.5, 5.0
    )
    add("rating", session[rated], position[rated], 50_000_000, stars[rated])

    columns = {name: np.concatenate(parts) for name, parts in rows.items()}
    stamps = np.datetime64(start.replace(tzinfo=None), "us") + columns["offset_us"].astype(
        "timedelta64[us]"
    )
    count = len(stamps)
    return pa.table(
        {
            "event_id": pa.array(columns["event_id"], pa.string()),
            "tenant_id": pa.array(np.full(count, log.tenant), pa.string()),
            "user_id": pa.array(columns["user_id"], pa.string()),
            "item_id": pa.array(columns["item_id"], pa.string()),
            "event_type": pa.array(columns["event_type"], pa.string()),
            "value": pa.array(columns["value"], pa.float64(), from_pandas=True),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "request_id": pa.array(columns["request_id"], pa.string()),
            "model_version": pa.array(np.full(count, LOGGING_POLICY), pa.string()),
            "variant": pa.array(np.full(count, "logged"), pa.string()),
            "position": pa.array(columns["position"], pa.int64()),
            "propensity": pa.array(columns["propensity"], pa.float64()),
        },
        schema=EVENT_SCHEMA,
    ).sort_by([("event_timestamp", "ascending"), ("event_id", "ascending")])


def user_catalog(log: SyntheticLog, world: SyntheticWorld) -> pa.Table:
    rng = np.random.default_rng([log.seed, 2])
    count = log.user_count
    return pa.table(
        {
            "tenant_id": np.full(count, log.tenant),
            "user_id": np.arange(count).astype(str),
            "age": pa.array(rng.integers(16, 75, count), pa.int64()),
            "gender": rng.choice(np.array(["F", "M"]), count),
            "occupation": rng.choice(np.array(OCCUPATIONS), count),
            "zip_code": np.char.zfill(rng.integers(0, 99_999, count).astype(str), 5),
        }
    )


def item_catalog(log: SyntheticLog, world: SyntheticWorld, by_day: int) -> pa.Table:
    """The items arriving up to day index `by_day`; an item's genre is its topic's."""
    rng = np.random.default_rng([log.seed, 3])
    years = rng.integers(1950, 2026, log.item_count)
    arrived = np.flatnonzero(world.item_arrival <= by_day)
    genres = np.array(GENRES)[world.item_topics[arrived] % len(GENRES)]
    return pa.table(
        {
            "tenant_id": np.full(len(arrived), log.tenant),
            "item_id": arrived.astype(str),
            "title": np.char.add("Item ", arrived.astype(str)),
            "release_year": pa.array(years[arrived], pa.int64()),
            "genres": genres,
        }
    )


@dataclass(frozen=True)
class SyntheticReport:
    tenant: str
    events: int
    by_type: dict[str, int]
    days: int
    users: int
    items: int
    item_snapshots: int


def snapshot_days(log: SyntheticLog) -> Iterator[int]:
    """The day indices an item catalog snapshot is dated on."""
    yield from range(0, log.days, log.snapshot_days)


def write_synthetic_log(
    log: SyntheticLog,
    layout: DataLayout,
    days: range | None = None,
    events_per_day: int | None = None,
) -> SyntheticReport:
    """Write the log's days (all, or the day indices in `days`, which may run past the
    log's last: new days arriving, of `events_per_day` events each) and its catalogs
    under `layout`'s raw directories; the same arguments write the same files."""
    world = SyntheticWorld.of(log)
    counts: dict[str, int] = {}
    wanted = days if days is not None else range(log.days)
    for day_index in wanted:
        table = day_events(log, world, day_index, events_per_day)
        day = log.first_day + timedelta(days=day_index)
        write_table_atomic(table, layout.raw_events_partition(log.tenant, day) / SYNTHETIC_BATCH)
        kinds, tallies = np.unique(
            table["event_type"].to_numpy(zero_copy_only=False), return_counts=True
        )
        for kind, tally in zip(kinds, tallies, strict=True):
            counts[str(kind)] = counts.get(str(kind), 0) + int(tally)
    # Catalog snapshots are dated on days of the log: written with those days, so a new
    # day arriving adds events only.
    if 0 in wanted:
        first = log.first_day.isoformat()
        write_table_atomic(
            user_catalog(log, world), layout.raw_catalog("users", log.tenant) / f"{first}.parquet"
        )
    snapshots = [day_index for day_index in snapshot_days(log) if day_index in wanted]
    for day_index in snapshots:
        dated = (log.first_day + timedelta(days=day_index)).isoformat()
        write_table_atomic(
            item_catalog(log, world, day_index + log.snapshot_days - 1),
            layout.raw_catalog("items", log.tenant) / f"{dated}.parquet",
        )
    return SyntheticReport(
        tenant=log.tenant,
        events=sum(counts.values()),
        by_type=dict(sorted(counts.items())),
        days=len(wanted),
        users=log.user_count,
        items=log.item_count,
        item_snapshots=len(snapshots),
    )
