"""Declarative freshness for the feature assets (dbt models and Feast).

`eager()` waits until no dependency is missing, but most daily event partitions
are never materialized (days without a raw batch, future days), so for assets
downstream of `validated_events` that would mean never. The condition below is
eager without that clause: rebuild once newly validated events (or an upstream
rebuild) arrived, when nothing upstream is still running.
"""

import dagster as dg

FRESH_FEATURES = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("eager (unvalidated days allowed)")
)

# Training is not in the target: retraining is the retrain sensors' decision
# (assets/monitoring.py), made on drift or on enough new data.
features_automation_sensor = dg.AutomationConditionSensorDefinition(
    "features_automation",
    target=dg.AssetSelection.groups("staging", "intermediate", "marts", "features"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Keeps dbt models and the Feast online store fresh after new validated events.",
)
