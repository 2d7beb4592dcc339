"""One experiment response: fallback filling, interleaving credit and what the log records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recloop.data.event_log import ServedList, feedback_row, impression_rows
from recloop.experiments import Router, parse_spec
from recloop.experiments.serving import VariantList, serve_route
from recloop.inference.policies import Greedy, Softmax, request_rng
from recloop.inference.retrievers import PopularityRetriever, Recommendation, rank_with_policy
from recloop.models.popularity_model import fit_popularity, load_popularity, save_popularity

NOW = datetime(2026, 12, 10, tzinfo=UTC)


def spec(test: str, fallback: str = "") -> bytes:
    return f"""
name: exp
description: test
start: 2026-12-01T00:00:00Z
stop: 2027-01-01T00:00:00Z
primary_metric: {"interleaving_preference" if "interleaving" in test else "ctr"}
variants:
  a:
    model: champion
    {fallback}
  b:
    model: champion
test:
  {test}
""".encode()


AB = "kind: ab\n  salt: s\n  allocation: {a: 100}"
INTERLEAVING = "kind: interleaving\n  salt: s\n  variants: [a, b]"
LISTS = {
    "a": Recommendation(["1", "2", "3"], [0.9, 0.8, 0.7], None, [0.5, 0.4, 0.3]),
    "b": Recommendation(["3", "4", "5", "6"], [0.6, 0.5, 0.4, 0.3], None, None),
}


def lists(asked: list[str]):
    def variant_list(variant: str, k: int) -> VariantList:
        asked.append(variant)
        recommendation = LISTS[variant]
        return VariantList(
            Recommendation(
                recommendation.item_ids[:k],
                recommendation.scores[:k],
                None,
                recommendation.propensities[:k] if recommendation.propensities else None,
            ),
            f"v-{variant}",
        )

    return variant_list


def route(text: bytes):
    parsed = parse_spec(text, Path("exp.yaml"))
    return Router([parsed]).route("u1", "t", {}, None, NOW)


def test_a_short_list_is_filled_from_the_fallback_and_credited_to_the_arm() -> None:
    asked: list[str] = []
    response = serve_route(route(spec(AB, "fallback: [b]")), lists(asked), 5, "r1")
    assert response.item_ids == ["1", "2", "3", "4", "5"]
    assert response.item_versions == ["v-a", "v-a", "v-a", "v-b", "v-b"]
    assert response.item_variants == ["exp:a"] * 5  # the A/B unit is the user's arm
    assert response.propensities == [0.5, 0.4, 0.3, None, None]  # only the arm's policy drew
    assert response.scores == [0.9, 0.8, 0.7, 0.5, 0.4]
    assert asked == ["a", "b"]


def test_a_full_list_never_asks_its_fallback() -> None:
    asked: list[str] = []
    response = serve_route(route(spec(AB, "fallback: [b]")), lists(asked), 3, "r1")
    assert response.item_ids == ["1", "2", "3"] and asked == ["a"]


def test_interleaving_credits_each_position_to_the_team_that_picked_it() -> None:
    response = serve_route(route(spec(INTERLEAVING)), lists([]), 6, "r7")
    assert sorted(response.item_ids) == ["1", "2", "3", "4", "5", "6"]
    by_team = {"exp:a": "v-a", "exp:b": "v-b"}
    for item, label, version in zip(
        response.item_ids, response.item_variants, response.item_versions, strict=True
    ):
        assert version == by_team[label]
        assert item in LISTS[label.removeprefix("exp:")].item_ids
    assert response.propensities == [None] * 6
    again = serve_route(route(spec(INTERLEAVING)), lists([]), 6, "r7")
    assert again == response  # the coin is the request's: replayable


def test_the_log_records_each_position_model_variant_and_propensity() -> None:
    served = ServedList(
        "r1",
        "t",
        "u1",
        ("1", "4"),
        "v-a+v-b",
        "exp:a",
        item_versions=("v-a", "v-b"),
        item_variants=("exp:a", "exp:a"),
        propensities=(0.5, None),
    )
    rows = impression_rows(served, [0.9, 0.5], NOW)
    assert [(r["model_version"], r["variant"], r["propensity"]) for r in rows] == [
        ("v-a", "exp:a", 0.5),
        ("v-b", "exp:a", None),
    ]
    click = feedback_row(served, "4", "click", None, NOW)
    assert (click["model_version"], click["position"], click["propensity"]) == ("v-b", 1, None)


def popularity_examples() -> pd.DataFrame:
    stamps = pd.to_datetime(
        ["2026-11-01", "2026-11-20", "2026-11-25", "2026-11-26", "2026-11-27", "2026-12-05"],
        utc=True,
    )
    return pd.DataFrame(
        {
            "tenant_id": "t",
            "user_id": ["u1", "u2", "u2", "u3", "u1", "u3"],
            "item_id": ["old", "a", "b", "a", "c", "late"],
            "event_timestamp": stamps,
        }
    )


def test_popularity_counts_its_window_and_never_recommends_what_the_user_had(tmp_path) -> None:
    catalog = np.array(["a", "b", "c", "old", "late", "never"])
    model = fit_popularity(
        popularity_examples(), catalog, pd.Timestamp("2026-12-01", tz="UTC"), window_days=14
    )
    assert dict(zip(model.item_ids, model.counts, strict=True)) == {
        "a": 2,
        "b": 1,
        "c": 1,
        "old": 0,
        "late": 0,
        "never": 0,
    }
    version = save_popularity(model, tmp_path / "m")
    loaded = load_popularity(tmp_path / "m", expected_version=version)
    assert version.startswith("pop-") and loaded.version == version
    retriever = PopularityRetriever(loaded)
    assert retriever.recommend("u2", None, 3).item_ids == ["c", "old", "late"]  # had a and b
    assert retriever.recommend("nobody", None, 2, exclude=["a"]).item_ids == ["b", "c"]
    assert retriever.interactions("u1") == 2 and retriever.interactions("nobody") == 0


def test_popularity_refuses_labels_outside_its_catalog() -> None:
    with pytest.raises(ValueError, match="missing from the catalog"):
        fit_popularity(
            popularity_examples(), np.array(["a"]), pd.Timestamp("2026-12-01", tz="UTC"), None
        )


def test_a_policy_draws_from_the_model_pool_and_logs_propensities(tmp_path) -> None:
    catalog = np.array([str(i) for i in range(40)])
    examples = pd.DataFrame(
        {
            "tenant_id": "t",
            "user_id": "u",
            "item_id": [str(i) for i in range(40) for _ in range(40 - i)],
            "event_timestamp": pd.Timestamp("2026-11-30", tz="UTC"),
        }
    )
    model = fit_popularity(examples, catalog, pd.Timestamp("2026-12-01", tz="UTC"), None)
    retriever = PopularityRetriever(model)  # "u" had every item: ask for someone else
    greedy = rank_with_policy(retriever, Greedy(), "x", None, 5, [], request_rng("r"))
    assert greedy.item_ids == ["0", "1", "2", "3", "4"] and greedy.propensities == [1.0] * 5
    softmax = Softmax(temperature=0.005, top_n=20)
    drawn = rank_with_policy(retriever, softmax, "x", None, 5, ["0"], request_rng("r"))
    assert "0" not in drawn.item_ids and len(drawn.item_ids) == 5
    assert all(0 < p <= 1 for p in drawn.propensities)
    assert drawn == rank_with_policy(retriever, softmax, "x", None, 5, ["0"], request_rng("r"))
