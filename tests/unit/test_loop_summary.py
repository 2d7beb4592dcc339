"""How `make loop` sums up its sessions (drivers/loop.py), on hand-made sessions."""

from __future__ import annotations

import pytest

from drivers.loop import Session, ctr, recovery_against_control, share_of_ideal


def session(clicks: int, ideal: float, drifted: bool = False) -> Session:
    return Session(0.0, "after_retrain", "ease-x", 10, clicks, drifted, ideal, ideal / 2)


def test_share_of_ideal_divides_clicks_by_the_best_lists_expected_clicks() -> None:
    sessions = [session(1, 2.0), session(2, 4.0)]
    assert ctr(sessions) == pytest.approx(3 / 20)
    assert share_of_ideal(sessions) == pytest.approx(3 / 6)
    assert share_of_ideal([]) != share_of_ideal([])  # nan: nothing was attainable


def test_recovery_against_the_unchanged_users_takes_out_their_common_fall() -> None:
    # everyone's CTR halves (users consume their favourites); the drifted users recover
    # to the same share of the unchanged users' CTR as before the drift: full recovery
    ctr_by_users = {
        "drifted": {"before_drift": 0.16, "after_drift": 0.05, "after_retrain": 0.08},
        "unchanged": {"before_drift": 0.20, "after_drift": 0.15, "after_retrain": 0.10},
    }
    assert recovery_against_control(ctr_by_users) == pytest.approx(1.0)
    ctr_by_users["drifted"]["after_retrain"] = 0.04
    assert recovery_against_control(ctr_by_users) == pytest.approx(0.5)
