"""The registry: candidates in the BentoML store, promotion, rollback and the audit log."""

import json
from dataclasses import replace

import pytest

from recloop.models.model_artifact import WEIGHTS, CorruptArtifactError
from recloop.registry.model_registry import PromotionError, Registry
from tests.model_fixtures import CONFIG, tiny_bundle

PASSED = {"gate": {"passed": True, "results": []}}
FAILED = {"gate": {"passed": False, "results": [{"name": "lift_over_popularity", "passed": False}]}}


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registry")


def register(registry: Registry, seed: int, metadata: dict, tenant: str = "shop") -> str:
    bundle = tiny_bundle(CONFIG.__class__(**{**CONFIG.to_dict(), "seed": seed}))
    return registry.register(replace(bundle, metadata={"tenants": [tenant]}), {}, metadata)


def test_register_is_idempotent_and_keeps_metadata(registry) -> None:
    bundle = tiny_bundle()
    first = registry.register(bundle, {"feature_service": "retrieval_v1"}, PASSED)
    again = registry.register(bundle, {"feature_service": "retrieval_v1"}, PASSED)
    assert first == again and registry.versions() == [first]
    assert registry.labels(first)["feature_service"] == "retrieval_v1"
    assert registry.metadata(first)["gate"]["passed"] is True
    assert registry.load(first).version == first


def test_promote_rollback_and_the_append_only_log(registry) -> None:
    first = register(registry, 1, PASSED)
    second = register(registry, 2, PASSED)
    assert registry.champion() is None
    registry.promote(first, reason="initial", actor="alice")
    registry.promote(second, reason="better", actor="bob")
    assert registry.champion() == second
    record = registry.rollback(reason="bad clicks", actor="carol")
    assert (record.version, record.previous) == (first, second)
    assert registry.champion() == first
    lines = registry.decisions.path("promotions").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["promote", "promote", "rollback"]
    assert [json.loads(line)["actor"] for line in lines] == ["alice", "bob", "carol"]
    with pytest.raises(PromotionError, match="only champion"):
        registry.rollback(reason="again")


def test_each_tenant_has_its_own_champion_stack(registry) -> None:
    shop_first, shop_second = register(registry, 1, PASSED), register(registry, 2, PASSED)
    books = register(registry, 3, PASSED, tenant="books")
    registry.promote(shop_first, reason="initial")
    registry.promote(shop_second, reason="better")
    assert registry.champion() == shop_second  # one tenant: it may go unnamed
    # Promoting the other tenant's model leaves this tenant's champion alone.
    record = registry.promote(books, reason="initial")
    assert (record.tenant, record.previous) == ("books", None)
    assert registry.champions() == {"books": books, "shop": shop_second}
    with pytest.raises(PromotionError, match=r"champions for 2 tenants \(books, shop\)"):
        registry.champion()
    with pytest.raises(PromotionError, match="name the tenant"):
        registry.rollback(reason="which one?")
    with pytest.raises(PromotionError, match="only champion"):
        registry.rollback(reason="bad", tenant="books")
    registry.rollback(reason="bad clicks", tenant="shop")
    assert registry.champions() == {"books": books, "shop": shop_first}
    assert [r.version for r in registry.history("books")] == [books]
    with pytest.raises(PromotionError, match="already the champion of books"):
        registry.promote(books, reason="again")


def test_records_written_before_tenants_were_recorded_take_the_models(registry) -> None:
    version = register(registry, 1, PASSED)
    registry.promote(version, reason="initial")
    (line,) = registry.decisions.path("promotions").read_text().splitlines()
    old = {name: value for name, value in json.loads(line).items() if name != "tenant"}
    registry.decisions.path("promotions").write_text(json.dumps(old) + "\n")
    assert registry.champions() == {"shop": version}
    assert registry.history()[0].tenant == "shop"


def test_a_candidate_that_failed_its_gates_is_not_promoted(registry) -> None:
    champion = register(registry, 1, PASSED)
    registry.promote(champion, reason="initial")
    failed = register(registry, 2, FAILED)
    with pytest.raises(
        PromotionError, match=r"did not pass its gates \(failed: \['lift_over_popularity'\]\)"
    ):
        registry.promote(failed, reason="try")
    assert registry.champion() == champion
    forced = registry.promote(failed, reason="incident override", force=True)
    assert forced.forced and registry.champion() == failed


def test_unknown_version_is_a_clear_error(registry) -> None:
    with pytest.raises(PromotionError, match="no model two_tower:tt-missing"):
        registry.promote("tt-missing", reason="typo")


def test_a_corrupted_weights_file_in_the_store_is_rejected(registry) -> None:
    version = register(registry, 1, PASSED)
    weights = registry.path(version) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CorruptArtifactError, match="sha256"):
        registry.load(version)


def test_models_cli_lists_promotes_and_refuses_with_a_message(
    tmp_path, monkeypatch, capsys
) -> None:
    from drivers.cli import main

    monkeypatch.setenv("RECLOOP_DATA_DIR", str(tmp_path))
    registry = Registry(tmp_path / "registry")
    passed = register(registry, 1, {**PASSED, "metrics": {"all": {"ndcg@10": 0.25}}})
    failed = register(registry, 2, FAILED)
    assert main(["models", "promote", passed, "--reason", "first"]) == 0
    assert main(["models", "promote", failed, "--reason", "second"]) == 2
    assert main(["models", "rollback", "--reason", "nothing before"]) == 2
    assert main(["models", "list"]) == 0
    assert main(["models", "history"]) == 0
    out, err = capsys.readouterr()
    assert f"champion of shop is now {passed}" in out
    table = out[out.index("VERSION") :].splitlines()
    assert table[0].split() == [
        "VERSION",
        "CREATED_AT",
        "GATE",
        "NDCG@10",
        "SERVED_FOR",
        "CODE_VERSION",
    ]
    rows = {line.split()[1 if line.startswith("*") else 0]: line.split() for line in table[1:3]}
    assert rows[passed][0] == "*" and rows[passed][3:] == [
        "passed",
        "0.25",
        "champion",
        "of",
        "shop",
    ]
    assert rows[failed][2:] == ["failed"]
    assert "did not pass its gates" in err and "nothing to roll back to" in err
    assert f"shop  promote  None -> {passed}" in out and "first" in out
    assert main(["models", "list", "--json"]) == 0
    listed = {row["version"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[passed]["champion"] and listed[passed]["ndcg@10"] == 0.25
    assert listed[failed]["gate"] == "failed" and not listed[failed]["champion"]


def test_models_cli_refuses_a_missing_or_file_data_dir_and_creates_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    from drivers.cli import main

    missing = tmp_path / "typo"
    monkeypatch.setenv("RECLOOP_DATA_DIR", str(missing))
    assert main(["models", "list"]) == 2
    assert f"the data directory {missing} (RECLOOP_DATA_DIR) does not exist" in (
        capsys.readouterr().err
    )
    assert not missing.exists()
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a directory")
    monkeypatch.setenv("RECLOOP_DATA_DIR", str(a_file))
    assert main(["models", "history"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_reading_an_empty_registry_creates_nothing(tmp_path) -> None:
    registry = Registry(tmp_path / "registry")
    assert registry.versions() == [] and registry.champion() is None
    assert not (tmp_path / "registry").exists()


def popularity_model():
    import numpy as np
    import pandas as pd

    from recloop.models.popularity_model import fit_popularity

    examples = pd.DataFrame(
        {
            "tenant_id": "t",
            "user_id": ["u1", "u2", "u2"],
            "item_id": ["a", "a", "b"],
            "event_timestamp": pd.Timestamp("2026-11-30", tz="UTC"),
        }
    )
    return fit_popularity(
        examples, np.array(["a", "b", "c"]), pd.Timestamp("2026-12-01", tz="UTC"), None
    )


def test_variant_deployments_keep_the_gate_and_follow_the_spec_as_written(
    registry, tmp_path, monkeypatch, capsys
) -> None:
    from drivers.cli import main

    version = registry.register(
        popularity_model(), {"experiment": "ab"}, {"experiment": "ab", "variant": "pop"}
    )
    assert version.startswith("pop-") and registry.load(version).counts.tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(PromotionError, match="did not pass its gates"):
        registry.deploy_variant("ab", "pop", version, "digest-1", FAILED["gate"], "test")
    assert registry.deployed_version("ab", "pop", "digest-1") is None
    registry.deploy_variant("ab", "pop", version, "digest-1", PASSED["gate"], "test")
    assert registry.deployed_version("ab", "pop", "digest-1") == version
    assert registry.deployed_version("ab", "pop", "digest-2") is None  # params changed: retrain
    (record,) = registry.deployments()
    assert record.gate == PASSED["gate"] and record.reason == "test"
    monkeypatch.setenv("RECLOOP_DATA_DIR", str(tmp_path))
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if version in line)
    assert row.split()[-2:] == ["experiment", "ab:pop"]


def test_an_experiment_variant_is_promoted_on_its_deployment_verdict(registry) -> None:
    version = registry.register(
        popularity_model(), {"experiment": "ab"}, {"experiment": "ab", "variant": "pop"}
    )
    with pytest.raises(PromotionError, match="no gate verdict"):
        registry.promote(version, reason="never deployed, never judged")
    registry.deploy_variant("ab", "pop", version, "digest-1", PASSED["gate"], "A/B")
    record = registry.promote(version, reason="won the A/B test")
    assert registry.champion() == version and not record.forced
