"""MovieLens-100K end to end: features -> PIT training set -> gated candidate -> champion -> HTTP.

One session-scoped pipeline run (about a minute and a half on 2 cores) feeds every test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from assets.definitions import TRAINING_JOB
from drivers.demo import DEMO_TENANT
from drivers.launcher import free_port, run_service, serve
from feature_repo.definitions import FEATURE_TTL
from recloop.data.layout import DataLayout
from recloop.data.validation import validate_events
from recloop.features.stream_features import WINDOW
from recloop.models.model_artifact import WEIGHTS
from recloop.registry.model_registry import Registry
from recloop.settings import Settings
from tests.model_fixtures import tiny_bundle
from tests.trained_system import API_KEY, TrainedSystem, call, get, wait_alive
from tests.unit.test_k8s_manifests import kustomized_image_tag


@pytest.fixture(scope="module")
def server(trained: TrainedSystem) -> str:
    with serve(trained.settings, {"RECLOOP_API_KEY": API_KEY}) as url:
        yield url


# --- training and gates -------------------------------------------------------------------------


def test_champion_is_registered_with_its_evidence(trained) -> None:
    registry = trained.registry
    champion = registry.champion()
    assert champion is not None and champion.startswith("tt-")
    metadata = registry.metadata(champion)
    assert metadata["gate"]["passed"] is True
    assert {r["name"] for r in metadata["gate"]["results"]} >= {
        "lift_over_popularity",
        "no_regression_vs_champion",
        "coverage",
        "popularity_bias",
        "finite_weights",
        "scores_not_constant",
        "index_covers_catalog",
    }
    assert metadata["metrics"]["all"]["ndcg@10"] > metadata["popularity"]["ndcg@10"]
    assert metadata["feature_service"] == "retrieval_v2"
    assert metadata["cutoffs"]["valid_start"] < metadata["cutoffs"]["test_start"]
    assert registry.labels(champion)["gate"] == "passed"
    assert registry.load(champion).index.kind == "exact"


def _as_of_oracle(
    trained: TrainedSystem, seed: int, example_column: str, mart: str, column: str, **as_of
) -> pd.DataFrame:
    """2,000 sampled training examples beside the brute-force answer: `mart`'s `column`
    from the user's row that `pd.merge_asof(**as_of)` picks for each label."""
    directory = Path(trained.registry.metadata(trained.registry.champion())["training_set"])
    examples = pd.read_parquet(directory / "examples.parquet").sample(2_000, random_state=seed)
    rows = pd.read_parquet(trained.settings.data_dir / "marts" / f"{mart}.parquet")
    labels = examples[["event_id", "user_id", "event_timestamp", example_column]]
    nanoseconds = {"event_timestamp": "datetime64[ns, UTC]"}
    return pd.merge_asof(
        labels.astype(nanoseconds).sort_values("event_timestamp"),
        rows[["user_id", "event_timestamp", column]]
        .astype(nanoseconds)
        .sort_values("event_timestamp"),
        on="event_timestamp",
        by="user_id",
        direction="backward",
        **as_of,
    )


def test_training_examples_only_see_features_stamped_before_their_label(trained) -> None:
    # the user's latest feature row at or before the label, within the TTL
    oracle = _as_of_oracle(
        trained,
        0,
        "user_features__rating_count_total",
        "user_features",
        "rating_count_total",
        tolerance=FEATURE_TTL,
    )
    expected = oracle["rating_count_total"].fillna(-1).to_numpy()
    actual = oracle["user_features__rating_count_total"].fillna(-1).to_numpy()
    assert len(oracle) == 2_000 and (actual == -1).sum() < 2_000
    assert (expected == actual).all()
    directory = Path(trained.registry.metadata(trained.registry.champion())["training_set"])
    split = pd.read_parquet(directory / "examples.parquet")["split"].value_counts()
    assert split["train"] > split["valid"] > 0 and split["test"] > 0


def test_training_examples_see_the_stream_as_it_was_just_before_their_label(trained) -> None:
    # the latest stream row strictly before the label, at most an hour old
    oracle = _as_of_oracle(
        trained,
        1,
        "user_stream__last_items",
        "user_stream_features",
        "last_items",
        allow_exact_matches=False,
        tolerance=WINDOW,
    )

    def items(value: object) -> list[str]:
        return [] if value is None or (isinstance(value, float) and value != value) else list(value)

    expected = oracle["last_items"].map(items)
    actual = oracle["user_stream__last_items"].map(items)
    assert (expected == actual).all()
    # MovieLens users rate in sessions: most labels have recent items.
    assert (actual.map(len) > 0).mean() > 0.5


def test_shuffled_labels_are_blocked_and_the_champion_keeps_serving(trained, server) -> None:
    """Shuffling which item each label names keeps every item's count: what is left to
    learn is popularity. Such a model ties popularity (non-inferior, so the lift gate lets
    it be), but its lists are popularity's (coverage) and worse than the champion's."""
    before = trained.registry.champion()
    result = trained.defs.resolve_job_def(TRAINING_JOB).execute_in_process(
        instance=trained.instance,
        partition_key=DEMO_TENANT,
        raise_on_error=False,
        run_config={
            "ops": {"model_candidate": {"config": {"label_permutation_seed": 1, "epochs": 3}}}
        },
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["coverage_and_bias"] is False
    assert checks["no_regression_vs_champion"] is False
    assert checks["sanity"] is True
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "model_candidate" in materialized and "champion_model" not in materialized
    assert trained.registry.champion() == before
    failed = [
        v for v in trained.registry.versions() if trained.registry.labels(v)["gate"] == "failed"
    ]
    assert len(failed) == 1
    status, reloaded = call(f"{server}/admin/reload", {}, {"X-API-Key": API_KEY})
    assert status == 200 and reloaded["champions"] == {DEMO_TENANT: before}
    status, answer = call(f"{server}/recommend", {"user_id": "1", "k": 5})
    assert status == 200 and answer["model_version"] == before


# --- the service over HTTP ----------------------------------------------------------------------


def test_recommend_ranks_unseen_items_with_the_champion(trained, server) -> None:
    bundle = trained.registry.load(trained.registry.champion())
    user = "1"
    status, answer = call(f"{server}/recommend", {"user_id": user, "k": 20, "exclude": ["50"]})
    assert status == 200
    assert answer["model_version"] == bundle.version and answer["variant"] == "champion"
    assert answer["fallback"] is None
    items = [item["item_id"] for item in answer["items"]]
    assert len(items) == 20 == len(set(items)) and [i["position"] for i in answer["items"]] == list(
        range(20)
    )
    row = list(bundle.user_ids).index(user)
    seen = {str(bundle.item_ids[i]) for i in bundle.history[row].indices}
    assert not seen & set(items) and "50" not in items
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)


def test_a_user_with_no_history_and_no_features_gets_the_marked_popularity_fallback(
    server,
) -> None:
    status, answer = call(f"{server}/recommend", {"user_id": "never-seen", "k": 3})
    assert status == 200 and answer["fallback"] == "popularity" and len(answer["items"]) == 3


def test_no_user_with_history_gets_the_popularity_fallback(trained, server) -> None:
    """The champion serves its weights refit on every label: the users whose labels all
    fall after the train part's cut-off (unknown to the judged weights) are ranked too."""
    bundle = trained.registry.load(trained.registry.champion(), with_evaluated=True)
    late = ~bundle.judged().model.known_users.numpy()
    assert late.sum() > 50 and bundle.model.known_users.all()
    fallbacks = []
    for user in bundle.user_ids:
        status, answer = call(f"{server}/recommend", {"user_id": str(user), "k": 3})
        assert status == 200
        if answer["fallback"] is not None:
            fallbacks.append(str(user))
    assert fallbacks == []


def test_similar_items(server) -> None:
    status, answer = call(f"{server}/similar_items", {"item_id": "1", "k": 5})
    assert status == 200 and len(answer["items"]) == 5
    assert "1" not in [item["item_id"] for item in answer["items"]]
    assert {item["model_version"] for item in answer["items"]} == {answer["model_version"]}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/recommend", {"user_id": "1", "k": 0}, {}, 400, "greater than or equal to 1"),
        ("/recommend", {"user_id": "1", "k": 101}, {}, 400, "less than or equal to 100"),
        (
            "/recommend",
            {"user_id": "1", "colour": "red"},
            {},
            400,
            "Extra inputs are not permitted",
        ),
        ("/recommend", {"k": 5}, {}, 400, "user_id: Field required"),
        ("/recommend", {"user_id": "1", "k": True}, {}, 400, "k: Input should be a valid integer"),
        ("/recommend", {"user_id": "1", "k": "3"}, {}, 400, "k: Input should be a valid integer"),
        ("/recommend", {"user_id": True}, {}, 400, "user_id: Input should be a valid string"),
        ("/recommend", b"{not json", {}, 400, "body: Invalid JSON"),
        (
            "/recommend",
            {"user_id": "1", "exclude": ["x" * 200] * 500},
            {},
            413,
            "exceeds the limit",
        ),
        (
            "/feedback",
            {"request_id": "r", "user_id": "1", "item_id": "1", "event_type": "click"},
            {},
            401,
            "X-API-Key",
        ),
        (
            "/feedback",
            {"request_id": "r", "user_id": "1", "item_id": "1", "event_type": "click"},
            {"X-API-Key": "wrong"},
            401,
            "X-API-Key",
        ),
        (
            "/feedback",
            {"request_id": "nope", "user_id": "1", "item_id": "1", "event_type": "click"},
            {"X-API-Key": API_KEY},
            404,
            "unknown request_id",
        ),
        (
            "/feedback",
            {"request_id": "r", "user_id": "1", "item_id": "1", "event_type": "like"},
            {"X-API-Key": API_KEY},
            400,
            "event_type",
        ),
        ("/admin/reload", {}, {}, 401, "X-API-Key"),
        ("/similar_items", {"item_id": "no-such-item", "k": 3}, {}, 404, "unknown item_id"),
    ],
)
def test_bad_requests_get_clear_4xx_errors(server, path, body, headers, status, message) -> None:
    got, answer = call(f"{server}{path}", body, headers)
    assert got == status
    assert set(answer) == {"error"} and message in answer["error"]
    assert "IODescriptor" not in answer["error"]


def test_integer_ids_are_taken_as_strings_and_any_content_type_is_read_as_json(
    server,
) -> None:
    status, as_integer = call(f"{server}/recommend", {"user_id": 1, "k": 3, "dry_run": True})
    _, as_string = call(f"{server}/recommend", {"user_id": "1", "k": 3, "dry_run": True})
    assert status == 200 and as_integer["items"] == as_string["items"]
    status, as_form = call(
        f"{server}/recommend",
        {"user_id": "1", "k": 3, "dry_run": True},
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and as_form["items"] == as_string["items"]


def test_a_dry_run_is_not_logged_and_repeated_feedback_is_logged_once(trained, server) -> None:
    auth = {"X-API-Key": API_KEY}
    _, trial = call(f"{server}/recommend", {"user_id": "5", "k": 3, "dry_run": True})
    assert trial["dry_run"] is True
    shown_item = trial["items"][0]["item_id"]
    feedback = {"user_id": "5", "item_id": shown_item, "event_type": "click"}
    status, answer = call(
        f"{server}/feedback", {**feedback, "request_id": trial["request_id"]}, auth
    )
    assert status == 404  # nothing of a dry run is remembered
    _, shown = call(f"{server}/recommend", {"user_id": "5", "k": 3})
    assert shown["dry_run"] is False
    feedback = {
        **feedback,
        "request_id": shown["request_id"],
        "item_id": shown["items"][0]["item_id"],
    }
    first = call(f"{server}/feedback", feedback, auth)[1]
    again = call(f"{server}/feedback", feedback, auth)[1]
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    rating = {**feedback, "event_type": "rating"}
    status, answer = call(f"{server}/feedback", {**rating, "value": 99.0}, auth)
    assert status == 422 and "a rating needs a value in [0.5, 5]" in answer["error"]
    status, answer = call(f"{server}/feedback", {**feedback, "value": 1.0}, auth)
    assert status == 422 and "a click carries no value" in answer["error"]
    _, flushed = call(f"{server}/admin/flush", {}, auth)
    logged = pd.concat(pd.read_parquet(path) for path in flushed["files"])
    assert trial["request_id"] not in set(logged["request_id"])
    mine = logged.loc[logged["request_id"] == shown["request_id"], "event_type"]
    assert sorted(mine) == ["click", "impression", "impression", "impression"]


def test_feedback_is_tied_to_what_was_shown_and_logged_as_raw_events(trained, server) -> None:
    _, shown = call(f"{server}/recommend", {"user_id": "2", "k": 3})
    clicked = shown["items"][1]["item_id"]
    auth = {"X-API-Key": API_KEY}
    feedback = {"request_id": shown["request_id"], "user_id": "2", "event_type": "click"}
    status, answer = call(f"{server}/feedback", {**feedback, "item_id": "not-shown"}, auth)
    assert status == 422 and "was not in the response" in answer["error"]
    status, answer = call(
        f"{server}/feedback", {**feedback, "user_id": "3", "item_id": clicked}, auth
    )
    assert status == 422
    status, answer = call(f"{server}/feedback", {**feedback, "item_id": clicked}, auth)
    assert status == 200 and answer["accepted"] is True
    status, flushed = call(f"{server}/admin/flush", {}, auth)
    assert status == 200
    events = pd.concat(pd.read_parquet(path) for path in flushed["files"])
    mine = events.loc[events["request_id"] == shown["request_id"]]
    assert sorted(mine["event_type"]) == ["click", "impression", "impression", "impression"]
    assert set(mine["model_version"]) == {shown["model_version"]}
    assert mine.loc[mine["event_type"] == "click", "position"].tolist() == [1]
    day = mine["event_timestamp"].iloc[0].date()
    result = validate_events(mine, tenant="ml100k", day=day, now=pd.Timestamp.now(tz="UTC"))
    assert result.quarantined.empty and len(result.valid) == 4


def test_health_metrics_and_openapi(server) -> None:
    assert get(f"{server}/livez")[0] == 200
    assert get(f"{server}/readyz")[0] == 200
    status, metrics = get(f"{server}/metrics")
    assert status == 200 and "bentoml_service_request_total" in metrics
    status, schema = get(f"{server}/docs.json")
    spec = json.loads(schema)
    assert status == 200 and "/recommend" in spec["paths"]
    assert spec["info"]["title"] == "recloop recommendation API"
    assert spec["info"]["version"] not in ("", "None")
    assert spec["paths"]["/recommend"]["post"]["description"].startswith("The user's top")
    status, page = get(f"{server}/docs")
    assert status == 200 and "swagger" in page.lower()
    request = urllib.request.Request(f"{server}/admin/stats", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and "served_lists" in json.loads(response.read())


def test_the_readme_curl_quick_start_runs_as_written(server) -> None:
    readme = (Path(__file__).resolve().parents[2] / "services" / "README.md").read_text()
    block = readme.split("<!-- curl-quickstart -->\n```bash\n", 1)[1].split("```", 1)[0]
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env={**os.environ, "URL": server, "RECLOOP_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert '"dry_run":true' in completed.stdout and '"accepted":true' in completed.stdout
    assert '"served_lists"' in completed.stdout and completed.stderr == ""


def test_with_redis_down_the_service_is_not_ready_and_answers_503_naming_it(trained) -> None:
    """The champion loads, but the Redis online store does not answer (nothing listens on
    its port): /readyz is 503, /recommend a fast 503 that names Redis, the stats say so,
    and the log says it once, not once per request."""
    address = f"127.0.0.1:{free_port()}"
    settings = replace(trained.settings, online_store="redis", redis_url=address)
    auth = {"X-API-Key": API_KEY}
    env = {"RECLOOP_API_KEY": API_KEY}
    with run_service(settings, env, "redis-down.log", wait_for_ready=False) as server:
        wait_alive(server.url)
        deadline = time.monotonic() + 60
        while not call(f"{server.url}/admin/stats", {}, auth)[1]["models"][DEMO_TENANT]["serving"]:
            assert time.monotonic() < deadline, "the champion never loaded"
            time.sleep(0.2)
        assert get(f"{server.url}/readyz")[0] == 503
        for _ in range(20):
            started = time.monotonic()
            status, answer = call(f"{server.url}/recommend", {"user_id": "1", "k": 3})
            assert time.monotonic() - started < 2.0
            assert status == 503
            assert f"the Redis online store at {address} is unreachable" in answer["error"]
        problem = call(f"{server.url}/admin/stats", {}, auth)[1]["online_store"]["problem"]
        assert f"the Redis online store at {address} is unreachable" in problem
    log = (settings.data_dir / "logs" / "redis-down.log").read_text()
    assert log.count("is unreachable") == 1, log[-3000:]
    assert "Traceback" not in log


def test_without_a_champion_the_service_is_alive_but_not_ready(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "empty")
    with serve(settings, wait_for_ready=False) as url:
        wait_alive(url)
        assert get(f"{url}/readyz")[0] == 503
        status, answer = call(f"{url}/recommend", {"user_id": "1", "k": 3})
        assert status == 503 and "no champion model yet" in answer["error"]


def test_a_corrupted_champion_is_never_served_and_the_error_says_why(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    registry = Registry(DataLayout(settings.data_dir).registry)
    version = registry.register(tiny_bundle(), {}, {"gate": {"passed": True, "results": []}})
    registry.promote(version, reason="test")
    weights = registry.path(version) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    with serve(settings, wait_for_ready=False) as url:
        wait_alive(url)
        for _ in range(100):
            status, answer = call(f"{url}/recommend", {"user_id": "u1", "k": 3})
            if "still loading" not in answer["error"]:
                break
            time.sleep(0.1)
        assert status == 503
        assert (
            "failed to load: CorruptArtifactError" in answer["error"] and WEIGHTS in answer["error"]
        )
        assert get(f"{url}/readyz")[0] == 503


def test_bentoml_build_packages_the_service_without_data(tmp_path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = Path(sys.executable).with_name("bentoml")
    # As `make bento` builds it: the version the Kubernetes manifests name.
    built = subprocess.run(
        [str(bentoml), "build", "--version", kustomized_image_tag(), "-o", "tag"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag == f"recloop:{kustomized_image_tag()}"
    (source,) = tmp_path.glob("bentos/recloop/*/src")
    assert (source / "services" / "service.py").is_file()
    assert (source / "recloop" / "inference" / "retrievers.py").is_file()
    # the service needs neither the Dagster code location nor the drivers
    assert not (source / "assets").exists() and not (source / "drivers").exists()
    assert (source / "feature_repo" / "feature_store.yaml").is_file()
    assert not (source / "tests").exists() and not (source / "data").exists()
