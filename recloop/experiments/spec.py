"""Experiment specs: YAML files read into typed objects, with every problem located.

A spec is checked in three passes, and all problems of a file are reported together:
YAML syntax and keys (duplicate or non-string keys), the published JSON Schema (shape,
unknown keys, enums), then the rules a schema cannot state (allocations sum to 100,
referenced variants exist, start < stop, the name is the file's). Each problem names the
file, line, column and field path, e.g.
`experiments/ab.yaml:12:5: test.allocation: allocations sum to 90, expected 100`.
Lines come from the YAML node tree, which keeps the position of every key and value.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import isfinite
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator, ValidationError

from recloop.experiments.algorithms import ALGORITHMS
from recloop.experiments.schema import INTERLEAVING_METRICS, experiment_schema

Inference = Literal["realtime", "batch"]
UserSegment = Literal["all", "new", "existing"]
Scalar = str | int | float | bool
PathPart = str | int

SPEC_SUFFIX = ".yaml"
# Picked up only to be rejected: a `.yml` spec beside the others would otherwise be
# silently ignored.
MISNAMED_SUFFIX = ".yml"
BASIS_POINTS = 10_000
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_FLOAT_TAG = "tag:yaml.org,2002:float"


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec file, where it is and what it is."""

    file: Path
    line: int | None  # 1-based; None when the problem has no place in the file
    column: int | None  # 1-based
    path: str  # dotted field path, e.g. "variants.two_tower.params.dim"; "" for the document
    message: str

    @classmethod
    def at(cls, file: Path, mark: yaml.Mark | None, path: str, message: str) -> SpecProblem:
        """A problem at a YAML mark (0-based there, 1-based here); no place without one."""
        if mark is None:
            return cls(file, None, None, path, message)
        return cls(file, mark.line + 1, mark.column + 1, path, message)

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(ValueError):
    """One or more spec files are invalid; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class BatchSchedule:
    """Precomputed top-k lists, refreshed on a cron schedule (UTC)."""

    k: int
    refresh_cron: str


@dataclass(frozen=True)
class Variant:
    """One arm: either an algorithm to train (`algorithm`) or a registered model (`model`)."""

    name: str
    algorithm: str | None
    model: str | None
    params: Mapping[str, Any]
    feature_service: str | None
    inference: Inference
    batch: BatchSchedule | None
    # The raw policy mapping, for recloop.inference.policies.policy_from_config; None serves the
    # model's order (greedy).
    policy: Mapping[str, Any] | None
    # Variants whose lists fill this one's when it has fewer than k items, in order. Only
    # their own lists are used, never their fallbacks: the chain is exactly what is written.
    fallback: tuple[str, ...]

    @property
    def trains(self) -> bool:
        """Whether the experiment trains this variant (rather than serving an existing model)."""
        return self.algorithm is not None

    @property
    def training_digest(self) -> str:
        """A hash of what decides the trained model (algorithm, params, feature service):
        a deployed model serves the variant only while this is unchanged, so editing the
        allocation or the dates keeps it, and editing a hyperparameter retrains."""
        body = json.dumps(
            {
                "algorithm": self.algorithm,
                "params": dict(self.params),
                "feature_service": self.feature_service,
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def _scalar_key(value: object) -> tuple[bool, object]:
    """Equality key that keeps `true` apart from 1 while 1 still equals 1.0."""
    return (isinstance(value, bool), value)


@dataclass(frozen=True)
class Audience:
    """Who enters the test. Everyone matches an audience that sets nothing."""

    users: UserSegment = "all"
    # New users have fewer events than this; existing users at least this many.
    activity_threshold: int | None = None
    tenants: frozenset[str] | None = None  # None: every tenant
    # Request context field -> allowed values; a request must carry every field.
    context: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    _allowed: Mapping[str, frozenset[tuple[bool, object]]] = field(
        init=False, repr=False, compare=False
    )
    # The user event counts accepted, as [low, high).
    event_range: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = {
            name: frozenset(map(_scalar_key, values)) for name, values in self.context.items()
        }
        object.__setattr__(self, "_allowed", allowed)
        threshold = self.activity_threshold
        if self.users == "all":
            if threshold is not None:
                raise ValueError("activity_threshold applies only to users 'new' or 'existing'")
            event_range = (0.0, float("inf"))
        elif threshold is None:
            raise ValueError(f"users {self.users!r} needs an activity_threshold")
        elif self.users == "new":
            event_range = (0.0, float(threshold))
        else:
            event_range = (float(threshold), float("inf"))
        object.__setattr__(self, "event_range", event_range)

    def matches(self, tenant: str, context: Mapping[str, object], user_events: int | None) -> bool:
        """Whether a request belongs to the audience.

        `user_events` None means the caller did not count the user's events: such a
        request matches only audiences that do not split new from existing users.
        """
        if self.tenants is not None and tenant not in self.tenants:
            return False
        if self.users != "all":
            low, high = self.event_range
            if user_events is None or not low <= user_events < high:
                return False
        for name, allowed in self._allowed.items():
            value = context.get(name)
            if not isinstance(value, str | int | float) or _scalar_key(value) not in allowed:
                return False
        return True

    def overlaps(self, other: Audience) -> bool:
        """Whether some request could belong to both audiences."""
        if self.tenants is not None and other.tenants is not None:
            if not self.tenants & other.tenants:
                return False
        low, high = self.event_range
        other_low, other_high = other.event_range
        if max(low, other_low) >= min(high, other_high):
            return False
        return all(
            self._allowed[name] & other._allowed[name]
            for name in self._allowed.keys() & other._allowed.keys()
        )

    def describe(self) -> str:
        """One line for people, e.g. "tenant ml100k; new users (< 5 events)"."""
        parts = []
        if self.tenants is not None:
            parts.append("tenant " + ", ".join(sorted(self.tenants)))
        if self.users == "new":
            parts.append(f"new users (< {self.activity_threshold} events)")
        elif self.users == "existing":
            parts.append(f"existing users (>= {self.activity_threshold} events)")
        for name, values in self.context.items():
            parts.append(f"context {name} in [{', '.join(map(str, values))}]")
        return "; ".join(parts) or "everyone"


@dataclass(frozen=True)
class ABTest:
    """Each user sticks to one variant, drawn by hashing (salt, user id) into basis points."""

    salt: str
    # Variant -> basis points (1/100 of a percent), in spec order; the values sum to 10,000.
    allocation: Mapping[str, int]
    # The variant the readout compares the others with.
    control: str = ""

    def __post_init__(self) -> None:
        if not self.control:
            object.__setattr__(self, "control", next(iter(self.allocation)))

    @property
    def kind(self) -> Literal["ab"]:
        return "ab"

    @property
    def served(self) -> tuple[str, ...]:
        return tuple(self.allocation)


@dataclass(frozen=True)
class InterleavingTest:
    """Every request in the audience gets the two variants' lists merged by team draft."""

    salt: str
    variants: tuple[str, str]
    method: Literal["team_draft"] = "team_draft"

    @property
    def kind(self) -> Literal["interleaving"]:
        return "interleaving"

    @property
    def served(self) -> tuple[str, ...]:
        return self.variants


@dataclass(frozen=True)
class ExperimentSpec:
    """One validated spec file."""

    name: str
    description: str
    owner: str | None
    variants: Mapping[str, Variant]  # in file order
    test: ABTest | InterleavingTest
    audience: Audience
    start: datetime  # UTC, inclusive
    stop: datetime  # UTC, exclusive
    primary_metric: str
    source: Path
    digest: str  # sha256 of the file's bytes

    def is_active(self, now: datetime) -> bool:
        """start <= now < stop; `now` must carry a time zone."""
        return self.start <= now < self.stop

    @property
    def tenant(self) -> str | None:
        """The tenant whose labels the variants train on and whose champion a "champion"
        variant serves: the audience's, when it names one; else None, for the only tenant
        (with several, training fails naming them)."""
        tenants = self.audience.tenants
        return next(iter(tenants)) if tenants is not None and len(tenants) == 1 else None


def active(specs: Iterable[ExperimentSpec], now: datetime) -> list[ExperimentSpec]:
    """The specs running at `now`, in the order given."""
    return [spec for spec in specs if spec.is_active(now)]


# --- reading YAML with positions -------------------------------------------------------


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as the strings written, for the schema to judge."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class _Document:
    """A parsed file: its data and the node tree that says where each value was written."""

    file: Path
    root: yaml.Node | None
    data: Any

    def _node(self, path: Sequence[PathPart], at_key: bool) -> yaml.Node | None:
        """The node of `path` (its key node when `at_key`), or its nearest ancestor found."""
        node = self.root
        for depth, part in enumerate(path):
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        last = depth == len(path) - 1
                        child = key_node if at_key and last else value_node
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    child = node.value[part]
            if child is None:
                return node
            node = child
        return node

    def problem(self, path: Sequence[PathPart], message: str, at_key: bool = False) -> SpecProblem:
        node = self._node(path, at_key)
        mark = node.start_mark if node is not None else None
        return SpecProblem.at(self.file, mark, format_path(path), message)


def format_path(path: Sequence[PathPart]) -> str:
    """("variants", "tt", "fallback", 0) -> "variants.tt.fallback[0]"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _parse_yaml(source: bytes, file: Path) -> tuple[_Document | None, list[SpecProblem]]:
    loader = _SpecLoader(source)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return None, [SpecProblem.at(file, mark, "", f"YAML syntax: {message}")]
    except yaml.YAMLError as exc:  # reader errors (e.g. invalid UTF-8) carry no mark
        return None, [SpecProblem(file, None, None, "", f"YAML: {exc}")]
    finally:
        loader.dispose()
    document = _Document(file, root, data)
    return document, _key_problems(document)


def _key_problems(document: _Document) -> list[SpecProblem]:
    """Duplicate keys (PyYAML keeps the last silently), keys that are not strings and
    .nan/.inf (which pass every JSON Schema bound)."""
    problems = []
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[PathPart, ...]) -> None:
        if id(node) in seen:  # an alias: already checked where its anchor is
            return
        seen.add(id(node))
        if node.tag == _FLOAT_TAG and node.value.lower().lstrip("+-") in (".nan", ".inf"):
            problems.append(
                SpecProblem.at(
                    document.file,
                    node.start_mark,
                    format_path(path),
                    f"{node.value} is not allowed: numbers must be finite",
                )
            )
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                mark = key_node.start_mark
                if key_node.tag == _MERGE_TAG:
                    continue
                if key_node.tag != _STR_TAG or not isinstance(key_node, yaml.ScalarNode):
                    problems.append(
                        SpecProblem.at(
                            document.file,
                            mark,
                            format_path(path),
                            f"key {getattr(key_node, 'value', '?')!r} must be a string (quote it)",
                        )
                    )
                    continue
                key = key_node.value
                if key in first_line:
                    problems.append(
                        SpecProblem.at(
                            document.file,
                            mark,
                            format_path((*path, key)),
                            f"duplicate key (first at line {first_line[key]})",
                        )
                    )
                first_line.setdefault(key, mark.line + 1)
                walk(value_node, (*path, key))

    if document.root is not None:
        walk(document.root, ())
    return problems


# --- the schema pass -------------------------------------------------------------------


def _suggest(word: object, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# JSON Schema's type names, as a YAML author knows them.
_YAML_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the number {value!r}"


def _schema_problems(document: _Document, error: ValidationError) -> Iterator[SpecProblem]:
    """Plain-language problems for one jsonschema error, placed where the fix goes."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    hint = schema.get("description")
    if "propertyNames" in error.schema_path:
        key = error.instance
        yield document.problem((*path, key), f"{key!r} is not a valid name: {hint}", at_key=True)
    elif error.validator == "additionalProperties":
        allowed = schema.get("properties", {})
        for key in error.instance:
            if key not in allowed:
                message = f"unknown field{_suggest(key, allowed)}"
                yield document.problem((*path, key), message, at_key=True)
    elif error.validator == "required":
        for name in error.validator_value:
            if name not in error.instance:
                yield document.problem(path, f"missing required field {name!r}")
    elif error.validator == "type":
        types = (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
        expected = " or ".join(_YAML_TYPES.get(name, name) for name in types)
        yield document.problem(path, f"expected {expected}, got {_describe(error.instance)}")
    elif error.validator == "enum":
        choices = [str(choice) for choice in error.validator_value]
        message = f"{error.instance!r} is not one of: {', '.join(choices)}"
        yield document.problem(path, message + _suggest(error.instance, choices))
    elif error.validator == "pattern" and hint:
        yield document.problem(path, f"{error.instance!r} is not valid: {hint}")
    elif error.validator in ("minItems", "maxItems"):
        bound = "at least" if error.validator == "minItems" else "at most"
        message = f"expected {bound} {error.validator_value} items, got {len(error.instance)}"
        yield document.problem(path, message)
    elif error.validator == "minProperties":
        yield document.problem(path, f"expected at least {error.validator_value} entries")
    elif error.validator == "uniqueItems":
        yield document.problem(path, "items must be unique")
    else:
        yield document.problem(path, error.message)


# --- the semantic pass: rules the schema cannot state ----------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    """`value` if the schema pass left it a mapping, else empty (its problem is reported)."""
    return value if isinstance(value, Mapping) else {}


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with an offset, as UTC; ValueError names what is wrong."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("it needs a UTC offset, e.g. 2026-12-01T00:00:00Z")
    return moment.astimezone(UTC)


def _semantic_problems(document: _Document) -> Iterator[SpecProblem]:
    data = _mapping(document.data)
    stem = document.file.stem
    if isinstance(data.get("name"), str) and data["name"] != stem:
        yield document.problem(("name",), f"{data['name']!r} differs from the file name {stem!r}")
    yield from _date_problems(document, data)
    audience = _mapping(data.get("audience"))
    if audience.get("users", "all") == "all" and "activity_threshold" in audience:
        message = "applies only to users: new or existing"
        yield document.problem(("audience", "activity_threshold"), message, at_key=True)
    test = _mapping(data.get("test"))
    yield from _metric_problems(document, test.get("kind"), data.get("primary_metric"))
    if not isinstance(data.get("variants"), Mapping):
        return  # the schema pass reported it; references cannot be checked
    variants = data["variants"]
    for name, raw in variants.items():
        yield from _variant_problems(document, name, _mapping(raw), variants)
    served: list[str] | None = None
    if test.get("kind") == "ab" and isinstance(test.get("allocation"), Mapping):
        served = list(test["allocation"])
        yield from _allocation_problems(document, test["allocation"], variants)
        control = test.get("control")
        if isinstance(control, str) and control not in test["allocation"]:
            message = f"{control!r} is not in the allocation{_suggest(control, served)}"
            yield document.problem(("test", "control"), message)
    elif test.get("kind") == "interleaving" and isinstance(test.get("variants"), list):
        served = [name for name in test["variants"] if isinstance(name, str)]
        for index, name in enumerate(test["variants"]):
            if isinstance(name, str) and name not in variants:
                message = f"unknown variant {name!r}{_suggest(name, variants)}"
                yield document.problem(("test", "variants", index), message)
    if served is not None:
        yield from _unserved_problems(document, variants, served)


def _date_problems(document: _Document, data: Mapping[str, Any]) -> Iterator[SpecProblem]:
    moments = {}
    for key in ("start", "stop"):
        if isinstance(data.get(key), str):
            try:
                moments[key] = parse_timestamp(data[key])
            except ValueError as exc:
                yield document.problem((key,), f"{data[key]!r} is not a valid timestamp: {exc}")
    if len(moments) == 2 and moments["start"] >= moments["stop"]:
        message = f"stop {data['stop']} is not after start {data['start']}"
        yield document.problem(("stop",), message)


def _metric_problems(document: _Document, kind: object, metric: object) -> Iterator[SpecProblem]:
    if kind not in ("ab", "interleaving") or not isinstance(metric, str):
        return
    if kind == "interleaving" and metric not in INTERLEAVING_METRICS:
        expected = ", ".join(INTERLEAVING_METRICS)
        message = f"an interleaving test measures {expected}, not {metric!r}"
        yield document.problem(("primary_metric",), message)
    if kind == "ab" and metric in INTERLEAVING_METRICS:
        yield document.problem(
            ("primary_metric",), f"{metric!r} applies to interleaving tests only"
        )


def _unserved_problems(
    document: _Document, variants: Mapping[str, Any], served: list[str]
) -> Iterator[SpecProblem]:
    """A variant neither in the test nor in a fallback would be trained for nothing."""
    used = set(served)
    for raw in variants.values():
        fallback = _mapping(raw).get("fallback")
        if isinstance(fallback, list):
            used.update(other for other in fallback if isinstance(other, str))
    for name in variants:
        if name not in used:
            message = "never served: put it in the test or in another variant's fallback"
            yield document.problem(("variants", name), message, at_key=True)


def _variant_problems(
    document: _Document, name: str, variant: Mapping[str, Any], variants: Mapping[str, Any]
) -> Iterator[SpecProblem]:
    path = ("variants", name)
    has_algorithm, has_model = "algorithm" in variant, "model" in variant
    if has_algorithm and has_model:
        yield document.problem((*path, "model"), "give either algorithm or model, not both", True)
    elif not (has_algorithm or has_model):
        yield document.problem(path, "needs either algorithm (to train) or model (to serve)")
    if has_model:
        for key in ("params", "feature_service"):
            if key in variant:
                yield document.problem((*path, key), "applies only to algorithm variants", True)
    algorithm_name = variant.get("algorithm")
    algorithm = ALGORITHMS.get(algorithm_name) if isinstance(algorithm_name, str) else None
    if algorithm is not None:
        if algorithm.uses_feature_service and "feature_service" not in variant:
            yield document.problem(
                path, f"{algorithm.name} needs a feature_service, e.g. retrieval_v2"
            )
        if not algorithm.uses_feature_service and "feature_service" in variant:
            message = f"{algorithm.name} reads no features: remove feature_service"
            yield document.problem((*path, "feature_service"), message, True)
    if "batch" in variant and variant.get("inference", "realtime") != "batch":
        yield document.problem((*path, "batch"), "applies only to inference: batch", True)
    fallback = variant.get("fallback")
    for index, other in enumerate(fallback if isinstance(fallback, list) else ()):
        if other == name:
            yield document.problem(
                (*path, "fallback", index), "a variant cannot fall back to itself"
            )
        elif isinstance(other, str) and other not in variants:
            message = f"unknown variant {other!r}{_suggest(other, variants)}"
            yield document.problem((*path, "fallback", index), message)


def _allocation_problems(
    document: _Document, allocation: Mapping[str, Any], variants: Mapping[str, Any]
) -> Iterator[SpecProblem]:
    path = ("test", "allocation")
    total, all_numbers = 0, True
    for name, percent in allocation.items():
        if name not in variants:
            message = f"unknown variant {name!r}{_suggest(name, variants)}"
            yield document.problem((*path, name), message, at_key=True)
        if isinstance(percent, int | float) and not isinstance(percent, bool) and isfinite(percent):
            basis_points = round(percent * 100)
            if abs(basis_points - percent * 100) > 1e-6:
                yield document.problem((*path, name), f"{percent} is finer than 0.01 percent")
            total += basis_points
        else:
            all_numbers = False  # the schema pass reported it; a sum would mislead
    if all_numbers and total != BASIS_POINTS:
        yield document.problem(path, f"allocations sum to {total / 100:g}, expected 100")


# --- building the typed spec -----------------------------------------------------------


def _build(document: _Document, digest: str) -> ExperimentSpec:
    data = document.data
    variants = {name: _build_variant(name, raw) for name, raw in data["variants"].items()}
    test_data = data["test"]
    test: ABTest | InterleavingTest
    if test_data["kind"] == "ab":
        allocation = {
            name: round(percent * 100) for name, percent in test_data["allocation"].items()
        }
        test = ABTest(test_data["salt"], MappingProxyType(allocation), test_data.get("control", ""))
    else:
        first, second = test_data["variants"]
        test = InterleavingTest(
            test_data["salt"], (first, second), test_data.get("method", "team_draft")
        )
    audience_data = data.get("audience", {})
    tenants = audience_data.get("tenants")
    audience = Audience(
        users=audience_data.get("users", "all"),
        activity_threshold=audience_data.get("activity_threshold"),
        tenants=frozenset(tenants) if tenants is not None else None,
        context=MappingProxyType(
            {name: tuple(values) for name, values in audience_data.get("context", {}).items()}
        ),
    )
    return ExperimentSpec(
        name=data["name"],
        description=data["description"].strip(),
        owner=data.get("owner"),
        variants=MappingProxyType(variants),
        test=test,
        audience=audience,
        start=parse_timestamp(data["start"]),
        stop=parse_timestamp(data["stop"]),
        primary_metric=data["primary_metric"],
        source=document.file,
        digest=digest,
    )


def _build_variant(name: str, raw: Mapping[str, Any]) -> Variant:
    batch = raw.get("batch")
    policy = raw.get("policy")
    return Variant(
        name=name,
        algorithm=raw.get("algorithm"),
        model=raw.get("model"),
        params=MappingProxyType(dict(raw.get("params", {}))),
        feature_service=raw.get("feature_service"),
        inference=raw.get("inference", "realtime"),
        batch=BatchSchedule(batch["k"], batch["refresh_cron"]) if batch else None,
        policy=MappingProxyType(dict(policy)) if policy is not None else None,
        fallback=tuple(raw.get("fallback", ())),
    )


# --- entry points ----------------------------------------------------------------------


def parse_spec(source: bytes, file: Path) -> ExperimentSpec:
    """Validate one spec's bytes; `file` names it in problems and must carry its name.

    Raises SpecError listing every problem of the file.
    """
    document, problems = _parse_yaml(source, file)
    if document is not None:
        if document.data is None:
            problems.append(SpecProblem(file, 1, 1, "", "empty file: expected a spec mapping"))
        else:
            validator = Draft202012Validator(experiment_schema())
            for error in validator.iter_errors(document.data):
                problems.extend(_schema_problems(document, error))
            problems.extend(_semantic_problems(document))
    if problems:
        unique = dict.fromkeys(problems)  # if/then branches can repeat a base error
        raise SpecError(sorted(unique, key=lambda p: (p.line or 0, p.column or 0, p.path)))
    assert document is not None
    return _build(document, hashlib.sha256(source).hexdigest())


def load_spec(file: Path) -> ExperimentSpec:
    """Read and validate one spec file (SpecError on any problem)."""
    if file.suffix != SPEC_SUFFIX:
        raise SpecError([SpecProblem(file, None, None, "", f"rename it to end in {SPEC_SUFFIX}")])
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise SpecError(
            [SpecProblem(file, None, None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_spec(source, file)


def spec_files(directory: Path) -> list[Path]:
    """The files of `directory` (not its subdirectories) that are or look like specs."""
    if not directory.is_dir():
        raise SpecError([SpecProblem(directory, None, None, "", "no such directory")])
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.suffix in (SPEC_SUFFIX, MISNAMED_SUFFIX)
    )


def load_specs(directory: Path) -> list[ExperimentSpec]:
    """Every `*.yaml` spec at the top of `directory`, in name order.

    Raises SpecError with the problems of all files, so one run shows everything to fix.
    """
    specs, problems = [], []
    for file in spec_files(directory):
        try:
            specs.append(load_spec(file))
        except SpecError as error:
            problems.extend(error.problems)
    if problems:
        raise SpecError(problems)
    return specs


def _combine(entries: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for file_name, file_digest in sorted(entries):
        digest.update(f"{file_name}\0{file_digest}\n".encode())
    return digest.hexdigest()


def directory_digest(directory: Path) -> str:
    """A content hash of the spec files in `directory`: cheap to poll for changes.

    Equals `specs_digest(load_specs(directory))` while the files do not change.
    """
    return _combine(
        (file.name, hashlib.sha256(file.read_bytes()).hexdigest()) for file in spec_files(directory)
    )


def specs_digest(specs: Iterable[ExperimentSpec]) -> str:
    """The content hash of the files these specs were read from."""
    return _combine((spec.source.name, spec.digest) for spec in specs)
