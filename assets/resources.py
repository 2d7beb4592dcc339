"""Resources: where the data lives and which online store serves it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from feast import FeatureStore

from feature_repo.store import open_feature_store
from recloop.data.layout import DataLayout
from recloop.settings import DEFAULT_REDIS_URL, Settings


class RecloopResource(dg.ConfigurableResource):
    """The data directory and engines, as chosen by `recloop.settings.Settings`."""

    data_dir: str
    online_store: str = "sqlite"
    redis_url: str = DEFAULT_REDIS_URL
    feast_project: str = "recloop"
    drift_window: int = Settings.drift_window
    retrain_after_events: int = Settings.retrain_after_events
    post_drift_impressions: int = Settings.post_drift_impressions

    @classmethod
    def from_settings(cls, settings: Settings) -> RecloopResource:
        return cls(
            data_dir=str(settings.data_dir),
            online_store=settings.online_store,
            redis_url=settings.redis_url,
            feast_project=settings.feast_project,
            drift_window=settings.drift_window,
            retrain_after_events=settings.retrain_after_events,
            post_drift_impressions=settings.post_drift_impressions,
        )

    def settings(self) -> Settings:
        return Settings(
            data_dir=Path(self.data_dir),
            online_store=self.online_store,  # type: ignore[arg-type]
            redis_url=self.redis_url,
            feast_project=self.feast_project,
            drift_window=self.drift_window,
            retrain_after_events=self.retrain_after_events,
            post_drift_impressions=self.post_drift_impressions,
        )

    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))

    def feature_store(self) -> FeatureStore:
        return open_feature_store(self.settings())
