"""Resources: where the data lives and which online store serves it."""

from __future__ import annotations

import dagster as dg
from feast import FeatureStore

from feature_repo.store import open_feature_store
from recloop.data.layout import DataLayout
from recloop.registry.model_registry import Registry
from recloop.settings import Settings


class RecloopResource(dg.ConfigurableResource):
    """`recloop.settings.Settings` for the code location, held as the `RECLOOP_*`
    variables that rebuild them (`Settings.to_env`): one declaration of every setting,
    shown in the Dagster UI as the environment a run sees."""

    # Not `env`: Dagster reads a config entry {"env": ...} as an EnvVar reference.
    variables: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> RecloopResource:
        return cls(variables=settings.to_env())

    def settings(self) -> Settings:
        return Settings.from_env(self.variables)

    def layout(self) -> DataLayout:
        return DataLayout(self.settings().data_dir)

    def feature_store(self) -> FeatureStore:
        return open_feature_store(self.settings())

    def registry(self) -> Registry:
        return Registry.of(self.settings())
