"""Online experiments declared in YAML: specs, validation, routing and planning.

A data scientist writes `experiments/<name>.yaml` (experiments/README.md); CI validates
it (`recloop experiments validate`); the Dagster factory builds the assets that
`variant_asset_keys` names; the service loads the directory with `load_specs`, routes
each request with `Router.route` and merges lists with `team_draft` or
`fill_with_fallback`. Pure domain code: no Dagster, BentoML or Feast here.

Modules: `algorithms` (the registry of trainable algorithms and their parameters),
`schema` (the generated JSON Schema), `spec` (loading and validation), `routing`
(per-request decisions), `plan` (asset keys, overlaps, the plan).
"""

from recloop.experiments.algorithms import ALGORITHMS, Algorithm, register_algorithm
from recloop.experiments.plan import (
    ASSET_PREFIX,
    Overlap,
    build_plan,
    find_overlaps,
    readout_asset_key,
    render_list,
    render_plan,
    status,
    variant_asset_keys,
)
from recloop.experiments.routing import (
    Route,
    Router,
    assignment_bucket,
    fill_with_fallback,
    request_rng,
    team_draft,
    team_draft_credit,
    variant_label,
)
from recloop.experiments.schema import experiment_schema, published_schema_path, schema_json
from recloop.experiments.spec import (
    ABTest,
    Audience,
    BatchSchedule,
    ExperimentSpec,
    InterleavingTest,
    SpecError,
    SpecProblem,
    Variant,
    active,
    directory_digest,
    load_spec,
    load_specs,
    parse_spec,
    parse_timestamp,
    specs_digest,
)

__all__ = [
    "ABTest",
    "ALGORITHMS",
    "ASSET_PREFIX",
    "Algorithm",
    "Audience",
    "BatchSchedule",
    "ExperimentSpec",
    "InterleavingTest",
    "Overlap",
    "Route",
    "Router",
    "SpecError",
    "SpecProblem",
    "Variant",
    "active",
    "assignment_bucket",
    "build_plan",
    "directory_digest",
    "experiment_schema",
    "fill_with_fallback",
    "find_overlaps",
    "load_spec",
    "load_specs",
    "parse_spec",
    "parse_timestamp",
    "published_schema_path",
    "readout_asset_key",
    "register_algorithm",
    "render_list",
    "render_plan",
    "request_rng",
    "schema_json",
    "specs_digest",
    "status",
    "team_draft",
    "team_draft_credit",
    "variant_asset_keys",
    "variant_label",
]
