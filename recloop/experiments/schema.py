"""The JSON Schema (draft 2020-12) of an experiment spec, generated from code.

Generated rather than hand-written so the algorithm registry stays the one source of
every algorithm's parameters. The committed copy, `recloop/experiment.schema.json`,
is what editors and CI tools use (a test keeps it equal to `schema_json()`; regenerate
it with `recloop experiments schema > recloop/experiment.schema.json`).

Every object is closed (`additionalProperties: false`): an unknown key is an error,
never silently ignored. Objects whose allowed keys depend on a discriminator (`test.kind`,
`policy.kind`, a variant's `algorithm`) are closed inside the `then` branch that matches.
Cross-field rules the schema cannot state (allocations sum to 100, referenced variants
exist, start < stop, ...) are checked by `recloop.experiments.spec`.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from recloop.data.layout import TENANT_PATTERN
from recloop.experiments.algorithms import ALGORITHMS

SCHEMA_FILE = "experiment.schema.json"

# Spec and variant names become Dagster asset-key parts and `variant` values in the event
# log: lower-case identifiers only.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# No ':' so that "<salt>:<user id>", the hashed assignment key, is unambiguous.
SALT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})$"
MODEL_PATTERN = r"^(champion|[a-z][a-z0-9]*-[0-9a-f]{8,64})$"
FEATURE_SERVICE_PATTERN = r"^[a-z][a-z0-9_]*_v[0-9]+$"
CRON_FIELD = r"[0-9A-Za-z*/,?-]+"
CRON_PATTERN = rf"^(@(hourly|daily|weekly|monthly)|{CRON_FIELD}( +{CRON_FIELD}){{4}})$"
CONTEXT_FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"

TEST_KINDS = ("ab", "interleaving")
INTERLEAVING_METHODS = ("team_draft",)
INFERENCE_MODES = ("realtime", "batch")
USER_SEGMENTS = ("all", "new", "existing")
POLICY_KINDS = ("greedy", "softmax", "epsilon_greedy")
# What the readout (recloop/experiments/readout.py) computes from the logged impressions and clicks;
# experiments/README.md defines each. A new metric goes here and into the readout.
METRICS = ("ctr", "clicks_per_request", "interleaving_preference")
INTERLEAVING_METRICS = ("interleaving_preference",)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _when(field: str, value: str, then: dict[str, Any]) -> dict[str, Any]:
    """`then` applies when `field` is present and equals `value`."""
    return {"if": {"required": [field], "properties": {field: {"const": value}}}, "then": then}


def _closed(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _policy() -> dict[str, Any]:
    kind = {"enum": list(POLICY_KINDS)}
    top_n = {
        "type": "integer",
        "minimum": 1,
        "description": "sample among the model's top N items only",
    }
    return {
        "description": "exploration policy over the model's scores (recloop/inference/policies.py)",
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": kind},
        "allOf": [
            _when("kind", "greedy", _closed({"kind": kind}, ["kind"])),
            _when(
                "kind",
                "softmax",
                _closed(
                    {
                        "kind": kind,
                        "temperature": {"type": "number", "exclusiveMinimum": 0},
                        "top_n": top_n,
                    },
                    ["kind", "temperature"],
                ),
            ),
            _when(
                "kind",
                "epsilon_greedy",
                _closed(
                    {
                        "kind": kind,
                        "epsilon": {"type": "number", "minimum": 0, "maximum": 1},
                        "top_n": top_n,
                    },
                    ["kind", "epsilon"],
                ),
            ),
        ],
    }


def _variant() -> dict[str, Any]:
    return {
        "description": "what one arm serves: a recipe to train (algorithm) or a registered model",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "algorithm": {"enum": sorted(ALGORITHMS)},
            "model": {
                "type": "string",
                "pattern": MODEL_PATTERN,
                "description": "champion, or a registered model version such as tt-0123456789abcdef",
            },
            "params": {"type": "object", "description": "the algorithm's hyperparameters"},
            "feature_service": {
                "type": "string",
                "pattern": FEATURE_SERVICE_PATTERN,
                "description": "a versioned Feast feature service such as retrieval_v2",
            },
            "inference": {"enum": list(INFERENCE_MODES), "default": "realtime"},
            "batch": _ref("batch"),
            "policy": _ref("policy"),
            "fallback": {
                "type": "array",
                "items": _ref("name"),
                "uniqueItems": True,
                "description": "variants that fill the list, in order, when this one has fewer than k items",
            },
        },
        "allOf": [
            *(
                _when("algorithm", name, {"properties": {"params": dict(algorithm.params_schema)}})
                for name, algorithm in sorted(ALGORITHMS.items())
            ),
            _when("inference", "batch", {"required": ["batch"]}),
        ],
    }


def _test() -> dict[str, Any]:
    kind = {"enum": list(TEST_KINDS)}
    salt = _ref("salt")
    return {
        "description": "how users are split: an A/B allocation or an interleaving pair",
        "type": "object",
        "required": ["kind", "salt"],
        "properties": {"kind": kind},
        "allOf": [
            _when(
                "kind",
                "ab",
                _closed(
                    {
                        "kind": kind,
                        "salt": salt,
                        "control": {
                            **_ref("name"),
                            "description": "the variant the others are compared with in the "
                            "readout (default: the first of the allocation)",
                        },
                        "allocation": {
                            "type": "object",
                            "minProperties": 1,
                            "propertyNames": _ref("name"),
                            "additionalProperties": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 100,
                                "description": "percent of the audience, in steps of 0.01",
                            },
                        },
                    },
                    ["kind", "salt", "allocation"],
                ),
            ),
            _when(
                "kind",
                "interleaving",
                _closed(
                    {
                        "kind": kind,
                        "salt": salt,
                        "method": {"enum": list(INTERLEAVING_METHODS), "default": "team_draft"},
                        "variants": {
                            "type": "array",
                            "items": _ref("name"),
                            "minItems": 2,
                            "maxItems": 2,
                            "uniqueItems": True,
                        },
                    },
                    ["kind", "salt", "variants"],
                ),
            ),
        ],
    }


def _audience() -> dict[str, Any]:
    scalar = {"type": ["string", "number", "boolean"]}
    return {
        "description": "who enters the test; everyone else gets the champion",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "users": {"enum": list(USER_SEGMENTS), "default": "all"},
            "activity_threshold": {
                "type": "integer",
                "minimum": 1,
                "description": "new users have fewer events than this, existing ones at least this many",
            },
            "tenants": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {
                    "type": "string",
                    "pattern": TENANT_PATTERN.pattern,
                    "description": "a tenant id (lower-case letters, digits, '-' and '_')",
                },
            },
            "context": {
                "type": "object",
                "description": "request context fields and the values they must take",
                "propertyNames": {
                    "pattern": CONTEXT_FIELD_PATTERN,
                    "description": "a context field name (letters, digits, '_', '.', '-')",
                },
                "additionalProperties": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": scalar,
                },
            },
        },
        "allOf": [
            _when("users", "new", {"required": ["activity_threshold"]}),
            _when("users", "existing", {"required": ["activity_threshold"]}),
        ],
    }


def experiment_schema() -> dict[str, Any]:
    """The spec schema for the algorithms registered now."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "recloop experiment spec",
        "description": "One online test: its variants, who sees them, how users are split and for how long. See experiments/README.md.",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "description", "variants", "test", "start", "stop", "primary_metric"],
        "properties": {
            "name": {**_ref("name"), "description": "equals the file name without .yaml"},
            "description": {"type": "string", "minLength": 1},
            "owner": {"type": "string", "minLength": 1},
            "start": _ref("timestamp"),
            "stop": _ref("timestamp"),
            "primary_metric": {"enum": list(METRICS)},
            "audience": _ref("audience"),
            "variants": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": _ref("name"),
                "additionalProperties": _ref("variant"),
            },
            "test": _ref("test"),
        },
        "$defs": {
            "name": {
                "type": "string",
                "pattern": NAME_PATTERN,
                "description": "a lower-case identifier: a letter, then letters, digits or '_'",
            },
            "salt": {
                "type": "string",
                "pattern": SALT_PATTERN,
                "description": "1-64 letters, digits, '_', '.' or '-' (a new salt reshuffles users)",
            },
            "timestamp": {
                "type": "string",
                "pattern": TIMESTAMP_PATTERN,
                "description": "a timestamp with its UTC offset, e.g. 2026-12-01T00:00:00Z",
            },
            "batch": _closed(
                {
                    "k": {"type": "integer", "minimum": 1, "maximum": 10_000},
                    "refresh_cron": {
                        "type": "string",
                        "pattern": CRON_PATTERN,
                        "description": "a five-field cron expression or @hourly/@daily/@weekly/@monthly",
                    },
                },
                ["k", "refresh_cron"],
            ),
            "policy": _policy(),
            "variant": _variant(),
            "test": _test(),
            "audience": _audience(),
        },
    }


def schema_json() -> str:
    """The schema as committed: stable key order, two-space indent, final newline."""
    return json.dumps(experiment_schema(), indent=2, ensure_ascii=False) + "\n"


def published_schema_path() -> Path:
    """Where the installed package keeps its committed copy of the schema."""
    return Path(str(files("recloop") / SCHEMA_FILE))
