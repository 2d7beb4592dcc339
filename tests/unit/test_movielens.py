"""MovieLens loaders on the real MovieLens-100K (from the recbole wheel) and on generated zips."""

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recloop.data.layout import DataLayout, parquet_files
from recloop.data.movielens import (
    MovieLensError,
    download_movielens,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    read_movielens_zip,
    split_users,
    to_raw_log,
    write_raw_log,
)
from recloop.data.schemas import EventSchema

WHEEL_CACHE = Path.home() / ".cache" / "recloop-tests"


@pytest.fixture(scope="module")
def ml100k():
    return read_ml100k_wheel(fetch_recbole_wheel(WHEEL_CACHE))


def test_ml100k_from_the_recbole_wheel(ml100k) -> None:
    assert len(ml100k.ratings) == 100_000
    assert ml100k.ratings["user_id"].nunique() == 943
    assert len(ml100k.users) == 943 and len(ml100k.items) == 1682
    toy_story = ml100k.items.set_index("item_id").loc["1"]
    assert (toy_story["title"], toy_story["release_year"]) == ("Toy Story", 1995)
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    assert ml100k.users.set_index("user_id").loc["1", "occupation"] == "technician"


def test_split_users_gives_disjoint_tenants_that_keep_every_rating(ml100k) -> None:
    first, second = split_users(ml100k, 2)
    users = [set(part.users["user_id"]) for part in (first, second)]
    assert not users[0] & users[1] and users[0] | users[1] == set(ml100k.users["user_id"])
    assert (len(users[0]), len(users[1])) == (472, 471)  # every other user by id
    assert "1" in users[0] and "2" in users[1] and "10" in users[1]
    assert len(first.ratings) + len(second.ratings) == len(ml100k.ratings)
    for part, mine in zip((first, second), users, strict=True):
        assert set(part.ratings["user_id"]) <= mine
        assert part.items.equals(ml100k.items)
    with pytest.raises(ValueError, match="0 parts"):
        split_users(ml100k, 0)


def test_raw_log_follows_the_event_contract(ml100k, tmp_path: Path) -> None:
    log = to_raw_log(ml100k, "ml100k")
    EventSchema.validate(log.events.head(5000))
    assert log.events["event_id"].is_unique
    layout = DataLayout(tmp_path)
    report = write_raw_log(log, layout)
    assert (report.events, report.first_day, report.last_day) == (
        100_000,
        "1997-09-20",
        "1998-04-22",
    )
    days = layout.event_days("ml100k")
    assert len(days) == report.partitions
    first = pd.read_parquet(parquet_files(layout.raw_events_partition("ml100k", days[0]))[0])
    assert (first["event_timestamp"].dt.date == days[0]).all()
    again = write_raw_log(log, layout)
    assert again == report
    assert sum(len(parquet_files(layout.raw_events_partition("ml100k", d))) for d in days) == len(
        days
    )


def test_corrupt_wheel_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"not the wheel")
    with pytest.raises(MovieLensError, match="sha256 .* does not match"):
        fetch_recbole_wheel(tmp_path)


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_ml1m_layout(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ml-1m.zip",
        {
            "ml-1m/ratings.dat": "1::10::5::978300760\n2::10::3::978302109\n",
            "ml-1m/movies.dat": "10::GoldenEye (1995)::Action|Adventure|Thriller\n",
            "ml-1m/users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
        },
    )
    frames = read_movielens_zip(archive)
    assert frames.ratings["rating"].tolist() == [5.0, 3.0]
    assert frames.items.iloc[0][["title", "release_year", "genres"]].tolist() == [
        "GoldenEye",
        1995,
        "Action|Adventure|Thriller",
    ]
    assert frames.users["age"].tolist() == [1, 56]


def test_ml_latest_csv_layout(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ml-latest-small.zip",
        {
            "ml-latest-small/ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n",
            "ml-latest-small/movies.csv": 'movieId,title,genres\n1,"Toy Story (1995)",Adventure|Animation\n2,Untitled,(no genres listed)\n',
        },
    )
    frames = read_movielens_zip(archive)
    assert frames.ratings["rating"].tolist() == [4.5]
    assert frames.items["title"].tolist() == ["Toy Story", "Untitled"]
    assert frames.items["genres"].isna().tolist() == [False, True]
    assert frames.users["user_id"].tolist() == ["1"]


def test_download_goes_through_the_real_http_code_path(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    _zip(
        served / "ml-latest-small.zip",
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n",
            "movies.csv": "movieId,title,genres\n",
        },
    )
    cache = tmp_path / "cache"
    path = download_movielens(
        "ml-latest-small", cache, url_template=f"file://{served}/{{name}}.zip"
    )
    assert path == cache / "ml-latest-small.zip" and zipfile.is_zipfile(path)
    with pytest.raises(MovieLensError, match="unknown MovieLens data set 'ml-2k'"):
        download_movielens("ml-2k", cache)


def test_download_rejects_a_non_zip(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "ml-1m.zip").write_text("<html>an error page</html>")
    with pytest.raises(MovieLensError, match="not a zip file"):
        download_movielens(
            "ml-1m", tmp_path / "cache", url_template=f"file://{served}/{{name}}.zip"
        )
    assert not (tmp_path / "cache" / "ml-1m.zip").exists()
