"""Idea to online test with no code change: the EASE-vs-popularity A/B example is copied
into a running system (service, simulated users, the real sensors and jobs run inline)
and goes live by itself, training included; an interleaving test of the two models it
trained follows; the readouts name the winner. Measures the lead time (goal: 10 minutes).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import dagster as dg
import pytest

from drivers.experiment_demo import ExperimentDemoConfig, run_experiments
from recloop.data.layout import DataLayout
from recloop.data.movielens import fetch_recbole_wheel, read_ml100k_wheel
from recloop.registry.model_registry import Registry
from recloop.simulator import fit_population
from tests.trained_system import TrainedSystem

LEAD_TIME_GOAL_S = 600
AB = "ease_vs_popularity_ab"
INTERLEAVING = "ease_vs_popularity_interleaving"


@pytest.fixture(scope="module")
def demo(trained: TrainedSystem, tmp_path_factory) -> tuple[dict, Registry]:
    root = tmp_path_factory.mktemp("experiment-demo")
    shutil.copytree(trained.settings.data_dir, root / "data")
    settings = replace(
        trained.settings, data_dir=root / "data", experiments_dir=root / "data" / "experiments"
    )
    layout = DataLayout(settings.data_dir)
    frames = read_ml100k_wheel(fetch_recbole_wheel(layout.cache))
    # The default users; EASE won both tests against popularity with them in `make experiments`.
    population = fit_population("grounded", frames.ratings, frames.items)
    consumed = frames.ratings.groupby("user_id")["item_id"].agg(set).to_dict()
    config = ExperimentDemoConfig(
        data_dir=settings.data_dir,
        artifacts=root / "artifacts",
        orchestrator="inline",
        algorithm="ease",
        warmup_sessions=100,
        sessions_per_test=700,
        rate=50.0,
        tick_s=2.0,
    )
    with dg.instance_for_test(temp_dir=str(root / "data" / "dagster")) as instance:
        summary = run_experiments(config, settings, instance, population, consumed)
    return summary, Registry(layout.registry)


def test_each_spec_went_live_by_itself_within_the_lead_time_goal(demo) -> None:
    summary, registry = demo
    lead_times = {name: test["lead_time_s"] for name, test in summary["tests"].items()}
    assert set(lead_times) == {AB, INTERLEAVING}
    assert all(t is not None and 0 < t < LEAD_TIME_GOAL_S for t in lead_times.values()), lead_times
    # the A/B test trained and deployed both variants; the interleaving test serves those
    deployed = {(d.experiment, d.variant) for d in registry.deployments()}
    assert deployed == {(AB, "ease"), (AB, "popularity")}
    assert summary["failed_requests"] == 0, summary["failures"]
    assert summary["active"] == [INTERLEAVING]  # the A/B test was stopped by its date


def test_the_ab_readout_counts_what_users_saw_and_names_a_clear_winner(demo) -> None:
    summary, _ = demo
    ab = summary["tests"][AB]
    variants = ab["variants"]
    assert set(variants) == {"ease", "popularity"}
    for name, result in variants.items():
        seen = summary["traffic"][f"{AB}:{name}"]  # nothing lost between the users and the readout
        assert (result["impressions"], result["clicks"]) == (seen["impressions"], seen["clicks"])
        assert result["impressions"] > 1_000
    (comparison,) = ab["comparisons"]
    assert comparison["control"] == f"{AB}:popularity"  # the spec's `control`
    assert comparison["treatment"] == f"{AB}:ease"
    assert comparison["p_value"] < 0.01, ab["summary"]
    assert comparison["verdict"] == "treatment better", ab["summary"]
    assert variants["ease"]["ctr"] > 1.1 * variants["popularity"]["ctr"], ab["summary"]
    assert not ab["sample_ratio"]["mismatch"], ab["sample_ratio"]


def test_interleaving_agrees_with_the_ab_test(demo) -> None:
    summary, _ = demo
    preference = summary["tests"][INTERLEAVING]["interleaving"]
    assert preference["sign_test_p_value"] < 0.01, preference
    assert preference["wins_a"] + preference["wins_b"] + preference["ties"] > 100
    ab = summary["tests"][AB]["variants"]
    better = max(ab, key=lambda name: ab[name]["ctr"])
    assert preference["winner"] == f"{INTERLEAVING}:{better}", (preference, ab)


def test_off_policy_replay_of_the_exploring_arm_matches_what_it_earned(demo) -> None:
    summary, _ = demo
    rows = summary["tests"][AB]["ope"]
    arm = f"{AB}:ease"  # the arm that explores (softmax): its log carries propensities
    (own,) = [r for r in rows if r["target"] == arm and r["logs_of"] == arm]
    assert own["enough_overlap"], own
    online = own["online_clicks_per_request"]
    low, high = own["snips"]["ci"]
    # the replay (features as of each request, the candidate set, the policy) is faithful
    assert abs(own["snips"]["value"] - online) < 0.15 * online, own
    assert low < own["logging_clicks_per_request"] < high, own
