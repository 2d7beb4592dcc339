import numpy as np
import pandas as pd

from recloop.features.parity import compare_as_of, compare_parity, values_equal


def test_values_equal_handles_nulls_floats_and_lists() -> None:
    assert values_equal(None, float("nan"))
    assert not values_equal(None, 0)
    assert values_equal(0.1 + 0.2, 0.3)
    assert not values_equal(1.0, 1.001)
    assert values_equal(np.array([0.5, 0.25]), [0.5, 0.25])
    assert not values_equal([0.5, 0.25], [0.5])
    assert values_equal("Drama", "Drama") and not values_equal("Drama", "Comedy")


def test_compare_parity_counts_mismatches_and_missing_entities() -> None:
    offline = pd.DataFrame(
        {"user_id": ["a", "b", "c", "d"], "n": [1, 2, 3, 4], "g": ["x", "y", "z", "w"]}
    )
    online = pd.DataFrame(
        {"user_id": ["a", "b", "c", "d"], "n": [1, 5, None, 4], "g": ["x", "y", None, "w"]}
    )
    report = compare_parity(offline, online, ["user_id"], ["n", "g"])
    assert (report.checked, report.mismatches, report.missing_online) == (4, 1, 1)
    assert not report.passed
    assert report.examples[0] == {
        "user_id": "b",
        "features": ["n"],
        "offline": [2],
        "online": [5.0],
    }
    assert report.mismatch_rate == 0.5


def test_compare_parity_passes_on_equal_frames() -> None:
    frame = pd.DataFrame({"item_id": ["1"], "v": [[0.1, 0.9]]})
    assert compare_parity(frame, frame.copy(), ["item_id"], ["v"]).passed


def test_tenants_sharing_a_user_id_are_compared_entity_by_entity() -> None:
    # User "1" of each tenant holds its own value; another tenant's row is no answer.
    offline = pd.DataFrame({"tenant_id": ["a", "b"], "user_id": ["1", "1"], "n": [3, 8]})
    swapped = offline.assign(n=[8, 3])
    assert compare_parity(offline, offline.copy(), ["tenant_id", "user_id"], ["n"]).passed
    report = compare_parity(offline, swapped, ["tenant_id", "user_id"], ["n"])
    assert report.mismatches == 2
    assert report.examples[0] == {
        "tenant_id": "a",
        "user_id": "1",
        "features": ["n"],
        "offline": [3],
        "online": [8],
    }
    only_a = offline.iloc[[0]]
    assert compare_parity(offline, only_a, ["tenant_id", "user_id"], ["n"]).missing_online == 1


def test_compare_as_of_compares_rows_of_the_same_second_and_counts_the_rest_apart() -> None:
    at = pd.Timestamp("2024-03-01 12:00:00.250", tz="UTC")
    second = pd.Timedelta(seconds=1)
    batch = pd.DataFrame(
        {
            "user_id": ["same", "differs", "stale", "ahead", "absent"],
            "event_timestamp": [at] * 5,
            "n": [1, 2, 3, 4, 5],
            "items": [["a"], ["b", "a"], ["c"], ["d"], ["e"]],
        }
    )
    online = pd.DataFrame(
        {
            "user_id": ["same", "differs", "stale", "ahead", "absent"],
            # Online rows are as of whole seconds.
            "event_timestamp": [at.floor("s"), at.floor("s"), at - second, at + second, pd.NaT],
            "n": [1, 2, 2, 9, None],
            "items": [["a"], ["a", "b"], ["c"], ["x"], None],
        }
    )
    report = compare_as_of(batch, online, ["user_id"], ["n", "items"])
    assert (report.checked, report.missing_online, report.stream_ahead) == (5, 1, 1)
    assert (report.compared, report.mismatches, report.mismatch_rate) == (3, 2, 2 / 3)
    assert report.examples[0] == {
        "user_id": "differs",
        "features": ["items"],
        "offline": [["b", "a"]],
        "online": [["a", "b"]],
    }
    assert report.examples[1]["user_id"] == "stale"
    assert report.examples[1]["problem"] == "online row older than the batch row"
