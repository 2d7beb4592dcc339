"""Data contracts for raw events and catalog snapshots, as pandera models.

Column checks report failures row by row, so `recloop.data.validation` can send each
failing row to quarantine with the check that rejected it.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

EVENT_TYPES = ("impression", "click", "rating", "purchase", "view")
# What a user did with an item (as opposed to being shown it): consumed items, stream counts.
ENGAGEMENT_TYPES = ("click", "purchase", "rating")
UTC_NS = {"unit": "ns", "tz": "UTC"}
# The stars a rating may carry (MovieLens' scale; "rated 4 or more" is a positive).
RATING_SCALE = (0.5, 5.0)


class EventSchema(pa.DataFrameModel):
    """One row of the raw event log (ARCHITECTURE.md, "Data contracts")."""

    event_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    tenant_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    user_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    event_type: Series[str] = pa.Field(nullable=False, isin=list(EVENT_TYPES))
    value: Series[float] = pa.Field(nullable=True)
    event_timestamp: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs=UTC_NS)
    request_id: Series[str] = pa.Field(nullable=True)
    model_version: Series[str] = pa.Field(nullable=True)
    variant: Series[str] = pa.Field(nullable=True)
    position: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    propensity: Series[float] = pa.Field(nullable=True, gt=0.0, le=1.0)

    class Config:
        coerce = True
        strict = "filter"

    @pa.dataframe_check(name="event_id is unique (later duplicates rejected)")
    def first_event_id(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["event_id"].duplicated(keep="first") | df["event_id"].isna()

    @pa.dataframe_check(
        name=f"rating events carry a value in [{RATING_SCALE[0]:g}, {RATING_SCALE[1]:g}]"
    )
    def rating_has_value(cls, df: pd.DataFrame) -> Series[bool]:
        value = pd.to_numeric(df["value"], errors="coerce")
        return (df["event_type"] != "rating") | value.between(*RATING_SCALE)


class UserCatalogSchema(pa.DataFrameModel):
    """A snapshot of user attributes."""

    tenant_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    user_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    age: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0, le=120)
    gender: Series[str] = pa.Field(nullable=True)
    occupation: Series[str] = pa.Field(nullable=True)
    zip_code: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True
        strict = "filter"

    @pa.dataframe_check(name="user_id is unique within the snapshot")
    def first_user_id(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["user_id"].duplicated(keep="first") | df["user_id"].isna()


class ItemCatalogSchema(pa.DataFrameModel):
    """A snapshot of item attributes; `genres` is a '|'-separated list."""

    tenant_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    title: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    release_year: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=1850, le=2100)
    genres: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True
        strict = "filter"

    @pa.dataframe_check(name="item_id is unique within the snapshot")
    def first_item_id(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["item_id"].duplicated(keep="first") | df["item_id"].isna()


def required_columns(model: type[pa.DataFrameModel]) -> list[str]:
    """Columns a file must have for `model`: the non-nullable ones."""
    schema = model.to_schema()
    return [name for name, column in schema.columns.items() if not column.nullable]


def all_columns(model: type[pa.DataFrameModel]) -> list[str]:
    return list(model.to_schema().columns)
