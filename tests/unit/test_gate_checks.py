"""How gate verdicts become the asset checks the Dagster UI shows."""

import dagster as dg

from assets.model_chain import gate_check_results, gate_outcome
from recloop.evaluation.gates import GateResult


def verdict(name: str, passed: bool = True, skipped: bool = False) -> dict:
    return GateResult(name, passed, 0.5, 0.1, f"{name} detail", skipped).to_dict()


def test_a_check_whose_gates_were_all_skipped_is_a_skipped_warning_not_a_pass() -> None:
    results = [
        verdict("no_regression_vs_champion", skipped=True),
        verdict("coverage"),
        verdict("popularity_bias", skipped=True),
        verdict("finite_weights", passed=False),
        verdict("scores_not_constant"),
    ]
    checks = {
        check.check_name: check
        for check in gate_check_results(
            results, ["no_regression_vs_champion", "coverage_and_bias", "sanity"]
        )
    }
    skipped = checks["no_regression_vs_champion"]
    assert (skipped.passed, skipped.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert skipped.metadata["outcome"].value == "skipped"
    mixed = checks["coverage_and_bias"]  # one passed, one skipped: passed, saying which
    assert mixed.passed and mixed.metadata["outcome"].value == "passed"
    assert "popularity_bias: popularity_bias detail" in mixed.metadata["detail"].value
    failed = checks["sanity"]
    assert (failed.passed, failed.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert [gate_outcome(r) for r in results] == [
        "skipped",
        "passed",
        "skipped",
        "failed",
        "passed",
    ]
