"""Experiment specs (recloop/experiments): validation with located problems, routing,
team-draft interleaving, fallback filling, planning and the `recloop experiments` CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from scipy import stats

from drivers.cli import main
from recloop.experiments import (
    ALGORITHMS,
    ExperimentSpec,
    Router,
    SpecError,
    active,
    assignment_bucket,
    build_plan,
    directory_digest,
    experiment_schema,
    fill_with_fallback,
    find_overlaps,
    load_spec,
    load_specs,
    published_schema_path,
    request_rng,
    schema_json,
    specs_digest,
    team_draft,
    team_draft_credit,
    variant_asset_keys,
)
from recloop.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SPEC_DIRECTORIES = (REPO / "experiments", REPO / "experiments" / "examples")
DURING = datetime(2026, 12, 5, tzinfo=UTC)

BASE = """\
name: base_spec
description: Two-tower against popularity.
start: 2026-12-01T00:00:00Z
stop: 2026-12-15T00:00:00Z
primary_metric: ctr
audience:
  users: existing
  activity_threshold: 5
  tenants: [shop]
variants:
  two_tower:
    algorithm: two_tower
    feature_service: retrieval_v2
    params:
      dim: 32
    fallback: [popularity]
  popularity:
    algorithm: popularity
test:
  kind: ab
  salt: base-1
  allocation:
    two_tower: 70
    popularity: 30
"""

INTERLEAVING_TEST = """\
test:
  kind: interleaving
  salt: base-1
  variants: [two_tower, popularity]
"""


def write_spec(directory: Path, text: str, name: str = "base_spec") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line containing `needle`."""
    lines = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(problem) for problem in caught.value.problems]


def spec_from(tmp_path: Path, text: str = BASE, name: str = "base_spec") -> ExperimentSpec:
    return load_spec(write_spec(tmp_path, text, name))


# --- the committed specs and schema ----------------------------------------------------


def test_every_committed_spec_is_valid() -> None:
    """The CI check: live specs and examples load without a problem."""
    examples = load_specs(SPEC_DIRECTORIES[1])
    live = load_specs(SPEC_DIRECTORIES[0])
    assert len(examples) >= 3
    kinds = {spec.test.kind for spec in examples}
    assert kinds == {"ab", "interleaving"}
    assert any(
        variant.inference == "batch" for spec in examples for variant in spec.variants.values()
    )
    assert all(spec.name == spec.source.stem for spec in [*examples, *live])


def test_committed_schema_is_the_generated_one_and_valid() -> None:
    committed = published_schema_path().read_text()
    assert committed == schema_json(), (
        "regenerate: recloop experiments schema > recloop/experiment.schema.json"
    )
    Draft202012Validator.check_schema(json.loads(committed))


def test_two_tower_params_schema_matches_its_config() -> None:
    from recloop.models.configs import TwoTowerConfig

    fields = {field.name for field in dataclasses.fields(TwoTowerConfig)}
    assert set(ALGORITHMS["two_tower"].params_schema["properties"]) == fields
    for spec in load_specs(SPEC_DIRECTORIES[1]):
        for variant in spec.variants.values():
            if variant.algorithm == "two_tower":
                assert TwoTowerConfig(**variant.params).dim > 0


def test_policy_shapes_match_the_policies_module() -> None:
    from recloop.inference.policies import POLICY_KINDS, policy_from_config

    policy_schema = experiment_schema()["$defs"]["policy"]
    assert policy_schema["properties"]["kind"]["enum"] == list(POLICY_KINDS)
    policies = [
        variant.policy
        for spec in load_specs(SPEC_DIRECTORIES[1])
        for variant in spec.variants.values()
        if variant.policy is not None
    ]
    assert {policy["kind"] for policy in policies} == set(POLICY_KINDS)
    for policy in policies:
        assert policy_from_config(policy).kind == policy["kind"]


def test_valid_spec_is_typed(tmp_path: Path) -> None:
    spec = spec_from(tmp_path)
    assert spec.test.allocation == {"two_tower": 7_000, "popularity": 3_000}
    assert spec.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert spec.variants["two_tower"].params == {"dim": 32}
    assert spec.variants["two_tower"].fallback == ("popularity",)
    assert spec.variants["popularity"].inference == "realtime"
    assert spec.audience.tenants == frozenset({"shop"})


# --- one test per kind of problem, each at its exact file:line:column ------------------


@pytest.mark.parametrize(
    ("old", "new", "needle", "column", "field", "message"),
    [
        pytest.param(
            "primary_metric: ctr\n",
            "primary_metric: ctr\ncolour: blue\n",
            "colour",
            1,
            "colour",
            "unknown field",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "  tenants: [shop]",
            "  tenant: [shop]",
            "tenant:",
            3,
            "audience.tenant",
            "unknown field (did you mean 'tenants'?)",
            id="unknown-nested-key",
        ),
        pytest.param(
            "  activity_threshold: 5",
            "  activity_threshold: five",
            "activity_threshold",
            23,
            "audience.activity_threshold",
            "expected an integer, got the string 'five'",
            id="wrong-type",
        ),
        pytest.param(
            "  salt: base-1\n",
            "",
            "kind: ab",
            3,
            "test",
            "missing required field 'salt'",
            id="missing-required-field",
        ),
        pytest.param(
            "primary_metric: ctr",
            "primary_metric: clicks",
            "primary_metric",
            17,
            "primary_metric",
            "'clicks' is not one of: ctr, clicks_per_request, interleaving_preference",
            id="bad-enum",
        ),
        pytest.param(
            "    popularity: 30",
            "    popularity: 20",
            "two_tower: 70",
            5,
            "test.allocation",
            "allocations sum to 90, expected 100",
            id="allocation-sum",
        ),
        pytest.param(
            "    popularity: 30",
            "    popularity: .nan",
            ".nan",
            17,
            "test.allocation.popularity",
            ".nan is not allowed: numbers must be finite",
            id="not-a-number",
        ),
        pytest.param(
            "    popularity: 30",
            "    populr: 30",
            "populr",
            5,
            "test.allocation.populr",
            "unknown variant 'populr' (did you mean 'popularity'?)",
            id="unknown-variant-in-allocation",
        ),
        pytest.param(
            "    fallback: [popularity]",
            "    fallback: [popular]",
            "fallback",
            16,
            "variants.two_tower.fallback[0]",
            "unknown variant 'popular' (did you mean 'popularity'?)",
            id="unknown-variant-in-fallback",
        ),
        pytest.param(
            "    fallback: [popularity]",
            "    fallback: [two_tower]",
            "fallback",
            16,
            "variants.two_tower.fallback[0]",
            "a variant cannot fall back to itself",
            id="fallback-to-itself",
        ),
        pytest.param(
            "stop: 2026-12-15T00:00:00Z",
            "stop: 2026-11-15T00:00:00Z",
            "stop:",
            7,
            "stop",
            "stop 2026-11-15T00:00:00Z is not after start 2026-12-01T00:00:00Z",
            id="stop-before-start",
        ),
        pytest.param(
            "stop: 2026-12-15T00:00:00Z",
            "stop: 2026-13-15T00:00:00Z",
            "stop:",
            7,
            "stop",
            "'2026-13-15T00:00:00Z' is not a valid timestamp: month must be in 1..12",
            id="impossible-date",
        ),
        pytest.param(
            "stop: 2026-12-15T00:00:00Z",
            "stop: 2026-12-15",
            "stop:",
            7,
            "stop",
            "'2026-12-15' is not valid: a timestamp with its UTC offset, e.g. 2026-12-01T00:00:00Z",
            id="date-without-time-zone",
        ),
        pytest.param(
            "name: base_spec",
            "name: other_spec",
            "name:",
            7,
            "name",
            "'other_spec' differs from the file name 'base_spec'",
            id="name-file-mismatch",
        ),
        pytest.param(
            "      dim: 32",
            "      dim: -1",
            "dim:",
            12,
            "variants.two_tower.params.dim",
            "-1 is less than the minimum of 1",
            id="bad-algorithm-param-value",
        ),
        pytest.param(
            "      dim: 32",
            "      dimm: 32",
            "dimm",
            7,
            "variants.two_tower.params.dimm",
            "unknown field (did you mean 'dim'?)",
            id="unknown-algorithm-param",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    feature_service: retrieval_v1",
            "retrieval_v1",
            5,
            "variants.popularity.feature_service",
            "popularity reads no features: remove feature_service",
            id="field-not-for-this-algorithm",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: populartiy",
            "populartiy",
            16,
            "variants.popularity.algorithm",
            "'populartiy' is not one of: ease, multi_stage, popularity, two_tower (did you mean 'popularity'?)",
            id="unknown-algorithm",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    model: champion",
            "model: champion",
            5,
            "variants.popularity.model",
            "give either algorithm or model, not both",
            id="algorithm-and-model",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    batch: {k: 10, refresh_cron: '@hourly'}",
            "batch:",
            5,
            "variants.popularity.batch",
            "applies only to inference: batch",
            id="batch-without-batch-inference",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    inference: batch",
            "algorithm: popularity",
            5,
            "variants.popularity",
            "missing required field 'batch'",
            id="batch-inference-without-schedule",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    policy: {kind: softmax, top_n: 5}",
            "policy:",
            13,
            "variants.popularity.policy",
            "missing required field 'temperature'",
            id="policy-missing-field",
        ),
        pytest.param(
            "    algorithm: popularity",
            "    algorithm: popularity\n    policy: {kind: greedy, epsilon: 0.1}",
            "policy:",
            28,
            "variants.popularity.policy.epsilon",
            "unknown field",
            id="policy-field-of-another-kind",
        ),
        pytest.param(
            "  users: existing",
            "  users: all",
            "activity_threshold",
            3,
            "audience.activity_threshold",
            "applies only to users: new or existing",
            id="threshold-without-segment",
        ),
        pytest.param(
            "  popularity:\n    algorithm: popularity\n",
            "  popularity:\n    algorithm: popularity\n  spare:\n    model: champion\n",
            "spare:",
            3,
            "variants.spare",
            "never served: put it in the test or in another variant's fallback",
            id="unused-variant",
        ),
    ],
)
def test_each_problem_is_located(
    tmp_path: Path, old: str, new: str, needle: str, column: int, field: str, message: str
) -> None:
    text = edit(BASE, old, new)
    path = write_spec(tmp_path, text)
    found = problems(path)
    line = line_of(text, needle)
    assert f"{path}:{line}:{column}: {field}: {message}" in found


def test_interleaving_needs_exactly_two_known_variants(tmp_path: Path) -> None:
    three = edit(INTERLEAVING_TEST, "[two_tower, popularity]", "[two_tower, popularity, extra]")
    text = edit(
        edit(BASE, BASE[BASE.index("test:") :], three),
        "metric: ctr",
        "metric: interleaving_preference",
    )
    path = write_spec(tmp_path, text)
    assert problems(path) == [
        f"{path}:{line_of(text, 'variants: [')}:13: test.variants: expected at most 2 items, got 3",
        f"{path}:{line_of(text, 'variants: [')}:37: test.variants[2]: unknown variant 'extra'",
    ]
    text = edit(BASE, BASE[BASE.index("test:") :], INTERLEAVING_TEST)
    path = write_spec(tmp_path, text)
    assert problems(path) == [
        f"{path}:5:17: primary_metric: an interleaving test measures interleaving_preference, not 'ctr'"
    ]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = edit(BASE, "  tenants: [shop]", "  tenants: [shop")
    path = write_spec(tmp_path, text)
    assert problems(path) == [
        f"{path}:{line_of(text, 'variants:')}:9: YAML syntax: expected ',' or ']', but got ':' "
        f"(while parsing a flow sequence at line {line_of(text, 'tenants')})"
    ]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = edit(BASE, "primary_metric: ctr\n", "primary_metric: ctr\nprimary_metric: ctr\n")
    path = write_spec(tmp_path, text)
    assert problems(path) == [f"{path}:6:1: primary_metric: duplicate key (first at line 5)"]


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    text = edit(BASE, "name: base_spec", "name: wrong")
    text = edit(text, "    popularity: 30", "    popularity: 20")
    text = edit(text, "      dim: 32", "      dim: big")
    path = write_spec(tmp_path, text)
    assert problems(path) == [
        f"{path}:1:7: name: 'wrong' differs from the file name 'base_spec'",
        f"{path}:15:12: variants.two_tower.params.dim: expected an integer, got the string 'big'",
        f"{path}:23:5: test.allocation: allocations sum to 90, expected 100",
    ]


def test_a_directory_reports_every_file(tmp_path: Path) -> None:
    write_spec(tmp_path, edit(BASE, "name: base_spec", "name: first"), "first")
    write_spec(tmp_path, "", "second")
    (tmp_path / "third.yml").write_text(BASE)
    (tmp_path / "notes.md").write_text("not a spec")
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{tmp_path}/second.yaml:1:1: empty file: expected a spec mapping",
        f"{tmp_path}/third.yml: rename it to end in .yaml",
    ]
    with pytest.raises(SpecError, match="no such directory"):
        load_specs(tmp_path / "missing")


# --- routing ---------------------------------------------------------------------------


def open_spec(tmp_path: Path, allocation: dict[str, int], salt: str = "base-1") -> ExperimentSpec:
    """BASE without its audience (every request), with these model variants and shares."""
    variants = "".join(f"  {name}:\n    model: champion\n" for name in allocation)
    shares = "".join(f"    {name}: {share}\n" for name, share in allocation.items())
    text = (
        BASE[: BASE.index("audience:")]
        + f"variants:\n{variants}test:\n  kind: ab\n  salt: {salt}\n  allocation:\n{shares}"
    )
    return spec_from(tmp_path, text)


def assigned(router: Router, users: int) -> list[str]:
    routes = (router.route(f"user-{index}", "shop", {}, None, DURING) for index in range(users))
    return [route.variants[0] for route in routes]  # type: ignore[union-attr]


def test_assignment_is_sticky_and_follows_the_documented_hash(tmp_path: Path) -> None:
    spec = spec_from(tmp_path)
    first = Router([spec]).route("user-42", "shop", {}, 9, DURING)
    again = [
        Router([spec]).route("user-42", "shop", {}, 9, DURING + timedelta(days=i)) for i in range(5)
    ]
    assert first is not None and all(route == first for route in again)
    digest = hashlib.sha256(b"base-1:user-42").digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000
    assert assignment_bucket("base-1", "user-42") == bucket
    assert first.variants == (("two_tower",) if bucket < 7_000 else ("popularity",))
    assert first.labels == (f"base_spec:{first.variants[0]}",)
    assert first.chain("two_tower") == ("two_tower", "popularity")


@pytest.mark.parametrize("allocation", [{"a": 70, "b": 30}, {"a": 50, "b": 25, "c": 25}])
def test_allocation_matches_its_shares(tmp_path: Path, allocation: dict[str, int]) -> None:
    users = 20_000
    counts = Counter(assigned(Router([open_spec(tmp_path, allocation)]), users))
    observed = [counts[name] for name in allocation]
    expected = [users * share / 100 for share in allocation.values()]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_salts_assign_independently(tmp_path: Path) -> None:
    first = assigned(Router([open_spec(tmp_path, {"a": 50, "b": 50}, "salt-one")]), 20_000)
    second = assigned(Router([open_spec(tmp_path, {"a": 50, "b": 50}, "salt-two")]), 20_000)
    pairs = Counter(zip(first, second, strict=True))
    table = [[pairs["a", "a"], pairs["a", "b"]], [pairs["b", "a"], pairs["b", "b"]]]
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert 0.45 < sum(x == y for x, y in zip(first, second, strict=True)) / 20_000 < 0.55


def test_audience_segments_tenants_context_and_dates(tmp_path: Path) -> None:
    text = edit(
        BASE, "  tenants: [shop]", "  tenants: [shop]\n  context:\n    platform: [ios, 3, true]"
    )
    router = Router([spec_from(tmp_path, text)])
    ios = {"platform": "ios"}
    assert router.needs_user_events
    assert router.route("u", "shop", ios, 5, DURING) is not None  # at the threshold: existing
    assert router.route("u", "shop", ios, 4, DURING) is None  # new
    assert router.route("u", "shop", ios, None, DURING) is None  # not counted
    assert router.route("u", "other", ios, 9, DURING) is None
    assert router.route("u", "shop", {}, 9, DURING) is None
    assert router.route("u", "shop", {"platform": "web"}, 9, DURING) is None
    assert router.route("u", "shop", {"platform": 3.0}, 9, DURING) is not None
    assert router.route("u", "shop", {"platform": 1}, 9, DURING) is None  # true is not 1
    assert router.route("u", "shop", {"platform": ["ios"]}, 9, DURING) is None
    start, stop = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 15, tzinfo=UTC)
    assert router.route("u", "shop", ios, 9, start) is not None
    assert router.route("u", "shop", ios, 9, start - timedelta(seconds=1)) is None
    assert router.route("u", "shop", ios, 9, stop) is None
    assert active(router.specs, start) == list(router.specs) and active(router.specs, stop) == []
    new_users = spec_from(tmp_path, edit(BASE, "users: existing", "users: new"))
    assert Router([new_users]).route("u", "shop", {}, 4, DURING) is not None
    assert Router([new_users]).route("u", "shop", {}, 5, DURING) is None


def test_overlapping_specs_go_to_the_first_by_name_and_are_reported(tmp_path: Path) -> None:
    alpha = spec_from(tmp_path, edit(BASE, "name: base_spec", "name: alpha"), "alpha")
    beta_text = edit(
        edit(BASE, "name: base_spec", "name: beta"), "start: 2026-12-01", "start: 2026-12-10"
    )
    beta = spec_from(tmp_path, beta_text, "beta")
    router = Router([beta, alpha])
    assert router.route("u", "shop", {}, 9, DURING).experiment == "alpha"  # type: ignore[union-attr]
    overlaps = find_overlaps([beta, alpha], DURING)
    assert [(o.winner, o.shadowed, o.start.day, o.stop.day) for o in overlaps] == [
        ("alpha", "beta", 10, 15)
    ]
    assert find_overlaps([beta, alpha], datetime(2026, 12, 20, tzinfo=UTC)) == []
    new_text = edit(edit(beta_text, "name: beta", "name: gamma"), "users: existing", "users: new")
    gamma = spec_from(tmp_path, new_text, "gamma")
    assert find_overlaps([alpha, gamma], DURING) == []
    other_tenant = spec_from(
        tmp_path, edit(new_text, "[shop]", "[mall]").replace("gamma", "delta"), "delta"
    )
    assert find_overlaps([alpha, other_tenant], DURING) == []


def test_interleaving_route_returns_both_variants(tmp_path: Path) -> None:
    text = edit(
        edit(BASE, BASE[BASE.index("test:") :], INTERLEAVING_TEST),
        "metric: ctr",
        "metric: interleaving_preference",
    )
    route = Router([spec_from(tmp_path, text)]).route("u", "shop", {}, 9, DURING)
    assert route is not None and route.interleaved
    assert route.variants == ("two_tower", "popularity")
    merged = [team_draft(list("abcd"), list("dcba"), 4, route.rng("request-7")) for _ in range(3)]
    assert merged[0] == merged[1] == merged[2]  # one request, one list


def test_route_costs_well_under_a_tenth_of_a_millisecond() -> None:
    specs = load_specs(SPEC_DIRECTORIES[1])
    router = Router(specs)
    when = datetime(2026, 12, 10, tzinfo=UTC)
    context = {"platform": "ios"}
    calls = 20_000
    began = time.perf_counter()
    for index in range(calls):
        router.route(f"user-{index}", "ml100k", context, index % 10, when)
    per_call = (time.perf_counter() - began) / calls
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per route()"


def test_digest_tracks_the_directory(tmp_path: Path) -> None:
    write_spec(tmp_path, BASE)
    specs = load_specs(tmp_path)
    assert directory_digest(tmp_path) == specs_digest(specs) == Router(specs).digest
    write_spec(tmp_path, BASE.replace("Two-tower against", "Two towers against"))
    assert directory_digest(tmp_path) != Router(specs).digest
    assert directory_digest(tmp_path) == Router(load_specs(tmp_path)).digest


# --- team draft and fallback -----------------------------------------------------------


class ScriptedCoin(random.Random):
    """A coin whose flips are given: True means A picks first in that round."""

    def __init__(self, a_first: list[bool]) -> None:
        super().__init__(0)
        self.flips = iter(a_first)

    def random(self) -> float:
        return 0.0 if next(self.flips) else 0.9


def test_team_draft_hand_checked_example() -> None:
    # Radlinski et al. 2008, figure 1's rankings; rounds: A first, B first, A first.
    ranking_a = ["a", "b", "c", "d", "g", "h"]
    ranking_b = ["b", "e", "a", "f", "g", "h"]
    merged, teams = team_draft(ranking_a, ranking_b, 6, ScriptedCoin([True, False, True]))
    assert merged == ["a", "b", "e", "c", "d", "f"]
    assert teams == [0, 1, 1, 0, 0, 1]
    assert team_draft_credit(teams, [1, 3]) == (1, 1)  # b (B) and c (A): a tie
    assert team_draft_credit(teams, [1, 2, 2]) == (0, 2)  # a repeated click counts once
    assert team_draft_credit(teams, []) == (0, 0)
    with pytest.raises(ValueError, match="outside the 6 shown"):
        team_draft_credit(teams, [6])


rankings = st.lists(st.sampled_from("abcdefghijkl"), unique=True, max_size=12)


@given(rankings, rankings, st.integers(0, 14), st.integers(0, 2**32))
def test_team_draft_properties(
    ranking_a: list[str], ranking_b: list[str], k: int, seed: int
) -> None:
    merged, teams = team_draft(ranking_a, ranking_b, k, random.Random(seed))
    assert len(set(merged)) == len(merged) == len(teams)
    assert len(merged) == min(k, len(set(ranking_a) | set(ranking_b)))
    for team, ranking in enumerate((ranking_a, ranking_b)):
        picks = [item for item, owner in zip(merged, teams, strict=True) if owner == team]
        assert picks == sorted(picks, key=ranking.index)  # each team keeps its own order
    for length in range(1, len(merged) + 1):
        before = set(merged[: length - 1])
        if set(ranking_a) - before and set(ranking_b) - before:  # both could still pick
            counts = Counter(teams[:length])
            assert abs(counts[0] - counts[1]) <= 1


@given(rankings, st.integers(0, 14), st.integers(0, 2**32))
def test_team_draft_of_identical_rankings_is_that_ranking(
    ranking: list[str], k: int, seed: int
) -> None:
    assert team_draft(ranking, ranking, k, random.Random(seed))[0] == ranking[:k]


def test_request_rng_is_a_stable_hash_of_the_request() -> None:
    seed = int.from_bytes(hashlib.sha256(b"salt-1:request-9").digest()[:8], "big")
    assert request_rng("salt-1", "request-9").random() == random.Random(seed).random()
    assert (
        request_rng("salt-1", "request-9").random() != request_rng("salt-1", "request-8").random()
    )


def test_fallback_fills_short_lists_without_duplicates() -> None:
    items, sources = fill_with_fallback(["a", "b"], [["b", "c"], ["d", "a", "e"]], 4)
    assert (items, sources) == (["a", "b", "c", "d"], [0, 0, 1, 2])
    assert fill_with_fallback(["a", "b", "c"], [["d"]], 2) == (["a", "b"], [0, 0])
    assert fill_with_fallback(["a", "a"], [["a"], []], 5) == (["a"], [0])
    assert fill_with_fallback([], [["x", "y"]], 1) == (["x"], [1])


# --- planning --------------------------------------------------------------------------


def test_asset_keys_depend_on_the_variant(tmp_path: Path) -> None:
    spec = {spec.name: spec for spec in load_specs(SPEC_DIRECTORIES[1])}[
        "new_users_recent_popularity"
    ]
    assert variant_asset_keys(spec, "recent_popularity") == {
        role: ("experiments", "new_users_recent_popularity", "recent_popularity", role)
        for role in ("training_set", "model", "evaluation", "batch_lists")
    }
    assert variant_asset_keys(spec, "champion") == {}
    ab = {spec.name: spec for spec in load_specs(SPEC_DIRECTORIES[1])}["two_tower_vs_popularity_ab"]
    assert list(variant_asset_keys(ab, "two_tower")) == [
        "training_set",
        "model",
        "evaluation",
        "deployment",
    ]


def test_plan_data_holds_the_routing_table() -> None:
    plan = build_plan(load_specs(SPEC_DIRECTORIES[1]), datetime(2026, 12, 10, tzinfo=UTC))
    by_name = {experiment["name"]: experiment for experiment in plan["experiments"]}
    ab = by_name["two_tower_vs_popularity_ab"]
    assert (ab["status"], ab["test"]["allocation_percent"]) == (
        "active",
        {"two_tower": 50, "popularity": 50},
    )
    assert ab["variants"][0]["fallback"] == ["popularity"]
    assert ab["variants"][0]["policy"] == {"kind": "softmax", "temperature": 0.05, "top_n": 50}
    interleaving = by_name["two_tower_vs_popularity_interleaving"]
    assert interleaving["status"] == "scheduled"
    assert interleaving["test"]["variants"] == ["two_tower", "popularity"]
    assert plan["warnings"] == []


# --- the CLI ---------------------------------------------------------------------------


def test_cli_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiments", "validate", *map(str, SPEC_DIRECTORIES)]) == 0
    assert capsys.readouterr().out.strip().endswith("spec(s) valid")


def test_cli_validate_reports_located_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_spec(tmp_path, BASE)
    bad = write_spec(
        tmp_path,
        edit(BASE.replace("base_spec", "bad"), "    popularity: 30", "    popularity: 20"),
        "bad",
    )
    assert main(["experiments", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:23:5: test.allocation: allocations sum to 90, expected 100" in err
    assert "1 problem(s) in 1 file(s); 1 spec(s) valid" in err


def test_cli_validate_warns_about_overlaps_and_reads_the_directory_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    dated = edit(
        edit(BASE, "2026-12-01T00:00:00Z", f"{now.year - 1}-01-01T00:00:00Z"),
        "2026-12-15T00:00:00Z",
        f"{now.year + 1}-01-01T00:00:00Z",
    )
    write_spec(tmp_path, dated.replace("base_spec", "alpha"), "alpha")
    write_spec(tmp_path, dated.replace("base_spec", "beta"), "beta")
    monkeypatch.setenv("RECLOOP_EXPERIMENTS_DIR", str(tmp_path))
    assert main(["experiments", "validate"]) == 0
    captured = capsys.readouterr()
    assert "2 spec(s) valid" in captured.out
    assert "warning: alpha and beta overlap from" in captured.err


def test_cli_list_and_plan_on_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    examples = str(SPEC_DIRECTORIES[1])
    assert main(["experiments", "list", examples, "--now", "2026-12-10T00:00:00Z"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "STATUS", "TEST", "VARIANTS", "START", "STOP", "METRIC"]
    statuses = {line.split()[0]: line.split()[1:3] for line in listed[1:]}
    assert statuses["two_tower_vs_popularity_ab"] == ["active", "ab"]
    assert statuses["ease_vs_popularity_ab"] == ["scheduled", "ab"]
    assert statuses["multi_stage_vs_popularity_interleaving"] == ["scheduled", "interleaving"]
    assert main(["experiments", "plan", examples, "--now", "2026-12-10T00:00:00Z"]) == 0
    plan = capsys.readouterr().out
    assert "plan as of 2026-12-10T00:00:00Z: 7 experiment(s)" in plan
    assert "status: scheduled (starts 2026-12-21T00:00:00Z, in 11 d 0 h)" in plan
    assert "recent_popularity [20%]: train popularity window_days=7" in plan
    assert (
        "batch top-100 refreshed '0 * * * *', policy epsilon_greedy(epsilon=0.1, top_n=50), fallback champion"
        in plan
    )
    assert "assets (experiments/<spec>/two_tower/): training_set, model, evaluation" in plan
    assert main(["experiments", "plan", examples, "--json", "--now", "2026-12-10T00:00:00Z"]) == 0
    assert len(json.loads(capsys.readouterr().out)["experiments"]) == 7


def test_cli_schema_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiments", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == experiment_schema()


def test_experiments_directory_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).experiments_dir == Path("experiments").resolve()
    settings = Settings.from_env({"RECLOOP_EXPERIMENTS_DIR": str(tmp_path / "specs")})
    assert settings.experiments_dir == tmp_path / "specs"
    assert Settings.from_env(settings.to_env()) == settings


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "experiments" / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = spec_from(tmp_path, example, "two_tower_vs_popularity_ab")
    assert spec.variants["two_tower"].policy == {
        "kind": "softmax",
        "temperature": 0.05,
        "top_n": 50,
    }
