"""Deprecation notices from libraries' own code that a recloop user can do nothing about;
each would otherwise open every run's log (and the demo's output) once per process.

Feast resets DeprecationWarning to "once" when it is imported, in front of any filter
set before it, so it is imported first and these filters go in front of its own.
"""

import warnings

import feast  # noqa: F401  (imported for its side effect on the warning filters; see above)

LIBRARY_NOTICES = (
    # dagster-dbt's own asset_utils reads the deprecated `context.op` (dagster-dbt 0.29).
    (r"AssetExecutionContext\.op is deprecated", "dagster_dbt"),
    # Feast's DuckDB offline store calls ibis's deprecated fetch_arrow_table (ibis 12).
    (r"fetch_arrow_table\(\) is deprecated", "ibis"),
    # Dagster's code server reads a property Dagster itself deprecated (dagster 1.13).
    (r"Property `ScheduleDefinition\.environment_vars`", "dagster"),
)

for message, module in LIBRARY_NOTICES:
    warnings.filterwarnings(
        "ignore", message=message, category=DeprecationWarning, module=rf"{module}(\.|$)"
    )
