"""pandera contracts: each kind of bad row goes to quarantine with the check that caught it."""

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from recloop.data.ingest import (
    event_partition_counts,
    pending_event_rows,
    validate_event_partition,
)
from recloop.data.layout import write_parquet_atomic
from recloop.data.samples import malformed_events
from recloop.data.schemas import EventSchema, ItemCatalogSchema, UserCatalogSchema
from recloop.data.validation import (
    REASON,
    RawFileError,
    read_raw_files,
    validate_catalog,
    validate_events,
)

DAY = date(2024, 3, 3)
NOW = datetime(2024, 3, 10, tzinfo=UTC)
TENANT = "shop"


def good_event(event_id: str = "e-good", **override: object) -> dict:
    row = {
        "event_id": event_id,
        "tenant_id": TENANT,
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "rating",
        "value": 4.0,
        "event_timestamp": pd.Timestamp("2024-03-03T08:00:00Z"),
        "request_id": None,
        "model_version": None,
        "variant": None,
        "position": None,
        "propensity": None,
    }
    row.update(override)
    return row


MALFORMED = malformed_events(TENANT, DAY, duplicate_of="e-good")


@pytest.mark.parametrize("defect", MALFORMED["defect"].tolist())
def test_each_defect_is_quarantined_with_its_reason(defect: str) -> None:
    bad = MALFORMED[MALFORMED["defect"] == defect]
    raw = pd.concat(
        [pd.DataFrame([good_event()]), bad.drop(columns=["defect", "expected_reason"])],
        ignore_index=True,
    )
    result = validate_events(raw, tenant=TENANT, day=DAY, now=NOW)
    assert result.valid["event_id"].tolist() == ["e-good"]
    assert result.quarantined_count == 1
    assert bad["expected_reason"].iloc[0] in result.quarantined[REASON].iloc[0]
    assert result.conserved


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"event_timestamp": pd.Timestamp("2024-03-03T12:00:00Z"), "event_id": "late"}, None),
        ({"event_timestamp": "not a time"}, "event_timestamp: coerce_dtype"),
        (
            {"event_timestamp": pd.Timestamp("2024-03-04T00:00:00Z")},
            "within partition date=2024-03-03",
        ),
        ({"item_id": ""}, "item_id: str_length"),
        ({"propensity": 1.5}, "propensity: less_than_or_equal_to(1.0)"),
        ({"propensity": 0.0}, "propensity: greater_than(0.0)"),
        ({"value": None}, "rating events carry a value in [0.5, 5]"),
        ({"value": float("inf")}, "rating events carry a value in [0.5, 5]"),
        ({"value": 99.0}, "rating events carry a value in [0.5, 5]"),
        ({"value": -1e308}, "rating events carry a value in [0.5, 5]"),
    ],
)
def test_more_row_defects(override: dict, reason: str | None) -> None:
    raw = pd.DataFrame([good_event(**override)])
    result = validate_events(raw, tenant=TENANT, day=DAY, now=NOW)
    if reason is None:
        assert result.valid_count == 1 and result.quarantined_count == 0
    else:
        assert result.valid_count == 0
        assert reason in result.quarantined[REASON].iloc[0]


def test_future_events_are_rejected_against_the_given_clock() -> None:
    raw = pd.DataFrame([good_event(event_timestamp=pd.Timestamp("2024-03-03T23:00:00Z"))])
    result = validate_events(raw, tenant=TENANT, day=DAY, now=datetime(2024, 3, 3, 12, tzinfo=UTC))
    assert result.quarantined[REASON].iloc[0] == "event_timestamp not in the future"


def test_valid_rows_are_typed_by_the_contract() -> None:
    raw = pd.DataFrame(
        [good_event(value="3.5", position=2, event_timestamp="2024-03-03T01:02:03+00:00")]
    )
    valid = validate_events(raw, tenant=TENANT, day=DAY, now=NOW).valid
    assert valid["value"].dtype == "float64"
    assert str(valid["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert valid["position"].dtype == "Int64"
    assert list(valid.columns) == list(EventSchema.to_schema().columns)


def test_quarantine_keeps_the_failing_value_as_text() -> None:
    raw = pd.DataFrame([good_event(value="five stars")]).astype({"value": "string"})
    quarantined = validate_events(raw, tenant=TENANT, day=DAY, now=NOW).quarantined
    assert quarantined["value"].iloc[0] == "five stars"
    assert quarantined[REASON].iloc[0].count("value:") == 1


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RawFileError, match="broken.parquet: not a readable Parquet file"):
        read_raw_files([broken], EventSchema)


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    path = write_parquet_atomic(
        pd.DataFrame([good_event()]).drop(columns=["user_id", "event_type"]),
        tmp_path / "thin.parquet",
    )
    with pytest.raises(
        RawFileError, match=r"missing required column\(s\) \['user_id', 'event_type'\]"
    ):
        read_raw_files([path], EventSchema)


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = write_parquet_atomic(
        pd.DataFrame([good_event()]).drop(columns=["request_id", "propensity"]),
        tmp_path / "a.parquet",
    )
    result = validate_events(read_raw_files([path], EventSchema), tenant=TENANT, day=DAY, now=NOW)
    assert result.valid_count == 1


def test_partition_outputs_conserve_counts_on_disk(tiny_log) -> None:
    day = tiny_log.event_days("shop")[0]
    partition = tiny_log.raw_events_partition("shop", day)
    write_parquet_atomic(
        MALFORMED.assign(event_timestamp=pd.Timestamp(f"{day}T12:00:00Z")).drop(
            columns=["defect", "expected_reason"]
        ),
        partition / "zz-bad.parquet",
    )
    report = validate_event_partition(tiny_log, "shop", day, NOW)
    counts = event_partition_counts(tiny_log, "shop", day)
    assert counts.conserved
    assert (counts.read, counts.valid, counts.quarantined) == (
        report.read,
        report.valid,
        report.quarantined,
    )
    # All seven malformed rows are re-stamped inside the day and none duplicates a tiny-log id,
    # so five defects remain: null user, unknown type, text value, wrong tenant, negative position.
    assert report.quarantined == 5
    assert report.valid == report.read - 5
    assert report.files == ["movielens.parquet", "zz-bad.parquet"]


def test_rows_no_validation_has_read_are_pending_not_raw_of_the_last_run(tiny_log) -> None:
    day = tiny_log.event_days("shop")[0]
    partition = tiny_log.raw_events_partition("shop", day)
    first = pending_event_rows(tiny_log, "shop", day)
    assert first > 0  # never validated: every row waits
    validate_event_partition(tiny_log, "shop", day, NOW)
    assert pending_event_rows(tiny_log, "shop", day) == 0
    late = MALFORMED.head(2).drop(columns=["defect", "expected_reason"])
    write_parquet_atomic(late, partition / "zz-late.parquet")
    counts = event_partition_counts(tiny_log, "shop", day)
    assert pending_event_rows(tiny_log, "shop", day) == 2
    assert counts.conserved and counts.read == first


def test_catalog_duplicates_and_out_of_range_values(tmp_path: Path) -> None:
    users = pd.DataFrame(
        {
            "tenant_id": [TENANT, TENANT, TENANT, "other"],
            "user_id": ["1", "1", "2", "3"],
            "age": [30, 31, 130, 40],
            "gender": ["F", "M", "F", "M"],
            "occupation": ["a", "b", "c", "d"],
            "zip_code": ["1", "2", "3", "4"],
        }
    )
    path = write_parquet_atomic(users, tmp_path / "2024-03-01.parquet")
    result = validate_catalog([path], UserCatalogSchema, tenant=TENANT)
    assert result.valid["user_id"].tolist() == ["1"]
    assert result.valid["snapshot_date"].iloc[0] == pd.Timestamp("2024-03-01")
    reasons = result.quarantined[REASON].tolist()
    assert "user_id is unique within the snapshot" in reasons[0]
    assert "age: less_than_or_equal_to(120)" in reasons[1]
    assert "tenant_id matches partition tenant=shop" in reasons[2]


def test_catalog_snapshot_name_must_be_a_date(tmp_path: Path) -> None:
    items = pd.DataFrame({"tenant_id": [TENANT], "item_id": ["1"], "title": ["A"]})
    path = write_parquet_atomic(items, tmp_path / "latest.parquet")
    with pytest.raises(RawFileError, match="must be named YYYY-MM-DD.parquet"):
        validate_catalog([path], ItemCatalogSchema, tenant=TENANT)


def test_conservation_detects_a_lost_quarantine_file(tiny_log) -> None:
    day = tiny_log.event_days("shop")[0]
    partition = tiny_log.raw_events_partition("shop", day)
    write_parquet_atomic(
        MALFORMED.head(1).drop(columns=["defect", "expected_reason"]), partition / "zz-bad.parquet"
    )
    validate_event_partition(tiny_log, "shop", day, NOW)
    assert event_partition_counts(tiny_log, "shop", day).conserved
    (tiny_log.quarantined_events_partition("shop", day) / "part.parquet").unlink()
    counts = event_partition_counts(tiny_log, "shop", day)
    assert not counts.conserved and counts.read == counts.valid + 1


def test_a_batch_landing_after_validation_waits_for_the_next_run(tiny_log) -> None:
    """A live partition gets batches while it is validated: conservation counts what the
    run read; a raw file the run read that later vanishes still breaks it."""
    day = tiny_log.event_days("shop")[0]
    partition = tiny_log.raw_events_partition("shop", day)
    report = validate_event_partition(tiny_log, "shop", day, NOW)
    late = MALFORMED.head(2).drop(columns=["defect", "expected_reason"])
    write_parquet_atomic(late, partition / "zz-late.parquet")
    counts = event_partition_counts(tiny_log, "shop", day)
    assert counts.conserved and counts.read == report.read
    (partition / report.files[0]).unlink()
    assert not event_partition_counts(tiny_log, "shop", day).conserved
