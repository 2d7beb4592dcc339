"""The statistics behind an online experiment's readout (issue #5).

Pure functions over the raw event log (ARCHITECTURE.md, "Data contracts"): impression and click rows whose
`variant` holds the label `"<experiment>:<variant>"`. Every function takes the variant
labels exactly as logged, so a log holding several experiments needs no parsing.

- A/B: per-variant CTR and clicks per request, each a ratio of per-user sums with a
  delta-method confidence interval. Users are the randomization unit and contribute
  many correlated impressions, so an impression-level binomial interval is too narrow;
  the delta method (Deng, Knoblich & Lu 2018) treats each user as one observation.
- A/B difference: absolute and relative CTR difference of a treatment against the named
  control, a two-sided delta-method z test, and a verdict.
- Sample-ratio mismatch: chi-square goodness of fit of users per variant against the
  configured allocation; a mismatch means the assignment is broken and the readout is
  not to be trusted, whatever its p-values say.
- Interleaving: per request, each team is credited with the clicks on the items it
  contributed; Δ_AB of Chapelle et al. (2012), a sign test and a bootstrap interval.

Confidence intervals are at level 1 - α (95 % at the default α = 0.05).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

REQUIRED_COLUMNS = ("user_id", "event_type", "variant", "request_id")
EXPERIMENT_KINDS = ("ab", "interleaving")
SRM_THRESHOLD = 0.001
BOOTSTRAP_RESAMPLES = 2_000
NOT_ENOUGH_DATA = "not enough data"
NO_PREFERENCE = "no preference"

ExperimentKind = Literal["ab", "interleaving"]


def json_safe(value: object) -> object:
    """NaN and infinities become None, so `json.dumps(..., allow_nan=False)` accepts them."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


class _JsonReport:
    """`to_dict()` for the frozen dataclasses below: plain JSON values, NaN as null."""

    def to_dict(self) -> dict[str, object]:
        return {key: json_safe(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Estimate(_JsonReport):
    """A point estimate with its standard error and (1 - α) confidence interval."""

    value: float
    standard_error: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class VariantSummary(_JsonReport):
    """One A/B variant's traffic and engagement; a variant without rows has zero counts
    and NaN rates."""

    variant: str
    users: int
    requests: int
    impressions: int
    clicks: int
    ctr: Estimate
    clicks_per_request: Estimate


@dataclass(frozen=True)
class VariantComparison(_JsonReport):
    """Treatment against control: CTR difference (treatment - control), relative
    difference (treatment / control - 1), their intervals, the z test and the verdict."""

    treatment: str
    control: str
    absolute_difference: Estimate
    relative_difference: Estimate
    z: float
    p_value: float
    alpha: float
    verdict: str


@dataclass(frozen=True)
class SampleRatioCheck(_JsonReport):
    """Users per variant against the allocation; `mismatch` when p < threshold."""

    observed_users: dict[str, int]
    expected_users: dict[str, float]
    chi_square: float
    p_value: float
    threshold: float
    mismatch: bool


@dataclass(frozen=True)
class InterleavingPreference(_JsonReport):
    """Wins, losses and ties of team A against team B over requests with a click.

    delta = (wins_a + ties / 2) / (wins_a + wins_b + ties) - 1/2 (Δ_AB of Chapelle et
    al. 2012): positive when A is preferred, in [-1/2, 1/2]. Requests nobody clicked say
    nothing about preference and are only counted. The sign test is a two-sided binomial
    test of wins_a against wins_b with ties left out; the interval is a percentile
    bootstrap over clicked requests.
    """

    team_a: str
    team_b: str
    requests: int
    requests_with_clicks: int
    impressions_a: int
    impressions_b: int
    clicks_a: int
    clicks_b: int
    wins_a: int
    wins_b: int
    ties: int
    delta: Estimate
    sign_test_p_value: float
    alpha: float
    winner: str


@dataclass(frozen=True)
class ExperimentReadout(_JsonReport):
    """Everything an experiment's readout reports. An A/B readout fills `variants`,
    `comparisons` (each treatment against the control) and, given an allocation,
    `sample_ratio`; an interleaving readout fills `interleaving`."""

    experiment: str
    kind: ExperimentKind
    alpha: float
    summary: str
    variants: tuple[VariantSummary, ...] = ()
    comparisons: tuple[VariantComparison, ...] = ()
    sample_ratio: SampleRatioCheck | None = None
    interleaving: InterleavingPreference | None = None


def experiment_name(variants: Sequence[str]) -> str:
    """The experiment all `variants` labels ("<experiment>:<variant>", split at the first
    colon) belong to."""
    if not variants:
        raise ValueError("no variants given")
    if len(set(variants)) != len(variants):
        raise ValueError(f"variants repeat a label: {list(variants)}")
    malformed = [label for label in variants if ":" not in label]
    if malformed:
        raise ValueError(
            f"variant labels must read '<experiment>:<variant>', as logged; got {malformed}"
        )
    experiments = sorted({label.partition(":")[0] for label in variants})
    if len(experiments) > 1:
        raise ValueError(f"variants belong to several experiments: {experiments}")
    return experiments[0]


def _experiment_rows(events: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """The impression and click rows of `variants`, after checking the log carries no
    variant of the same experiment that `variants` leaves out (its traffic would vanish
    from the readout unnoticed)."""
    missing = [column for column in REQUIRED_COLUMNS if column not in events.columns]
    if missing:
        raise ValueError(f"events lack the columns {missing}")
    experiment = experiment_name(variants)
    unknown = sorted(
        label
        for label in events["variant"].dropna().unique()
        if isinstance(label, str) and label.startswith(f"{experiment}:") and label not in variants
    )
    if unknown:
        raise ValueError(
            f"events carry variants of experiment {experiment!r} that are not in variants: "
            f"{unknown}"
        )
    selected = events["variant"].isin(variants) & events["event_type"].isin(("impression", "click"))
    return events.loc[selected, list(REQUIRED_COLUMNS)]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _critical_z(alpha: float) -> float:
    _check_alpha(alpha)
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


def _interval(value: float, standard_error: float, alpha: float) -> Estimate:
    half_width = _critical_z(alpha) * standard_error
    return Estimate(value, standard_error, value - half_width, value + half_width)


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, alpha: float = 0.05) -> Estimate:
    """sum(numerator) / sum(denominator) over users, with the delta-method standard error

        Var(R) ~ (var_x - 2 R cov_xy + R^2 var_y) / (n * mean_y^2),

    which treats each user's pair (x, y) as one observation, so the correlation between
    one user's impressions is accounted for. NaN when there are fewer than two users.
    """
    _check_alpha(alpha)
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    users = len(numerator)
    if users == 0 or denominator.sum() == 0:
        return Estimate(np.nan, np.nan, np.nan, np.nan)
    mean_x, mean_y = numerator.mean(), denominator.mean()
    ratio = float(mean_x / mean_y)
    if users < 2:
        return Estimate(ratio, np.nan, np.nan, np.nan)
    covariance = np.cov(numerator, denominator, ddof=1)
    variance = (covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]) / (
        users * mean_y**2
    )
    return _interval(ratio, float(np.sqrt(max(variance, 0.0))), alpha)


def _per_user_counts(rows: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """One row per (variant, user) with the variant's index in `variants`, impressions,
    clicks and distinct requests among the impressions.

    Counts on integer codes with `np.bincount`: on millions of rows that is several
    times faster than grouping by the string columns.
    """
    user_code, users = pd.factorize(rows["user_id"])
    if (user_code < 0).any():
        raise ValueError(f"{int((user_code < 0).sum())} rows have no user_id")
    user_count = max(len(users), 1)
    variant_code = pd.Categorical(rows["variant"], categories=list(variants)).codes
    unit_code, units = pd.factorize(variant_code.astype(np.int64) * user_count + user_code)
    is_impression = rows["event_type"].eq("impression").to_numpy()
    impressions = np.bincount(unit_code, weights=is_impression, minlength=len(units))
    rows_per_unit = np.bincount(unit_code, minlength=len(units))
    request_code, requests = pd.factorize(rows["request_id"])
    request_count = max(len(requests), 1)
    counted = is_impression & (request_code >= 0)
    unit_requests = pd.unique(
        unit_code[counted].astype(np.int64) * request_count + request_code[counted]
    )
    return pd.DataFrame(
        {
            "variant": units // user_count,
            "impressions": impressions.astype(np.int64),
            "clicks": rows_per_unit - impressions.astype(np.int64),
            "requests": np.bincount(unit_requests // request_count, minlength=len(units)),
        }
    )


def ab_variant_summaries(
    events: pd.DataFrame, variants: Sequence[str], alpha: float = 0.05
) -> tuple[VariantSummary, ...]:
    """Per variant: users, requests, impressions, clicks, CTR (clicks / impressions) and
    clicks per request, both with delta-method intervals over users (see `ratio_of_sums`).

    A user counts in a variant when any of its impression or click rows carries the label;
    clicks are click rows, so a repeated click on one impression counts twice.
    """
    per_user = _per_user_counts(_experiment_rows(events, variants), variants)
    summaries = []
    for code, variant in enumerate(variants):
        users = per_user[per_user["variant"].to_numpy() == code]
        impressions, clicks, requests = (
            users[column].to_numpy() for column in ("impressions", "clicks", "requests")
        )
        summaries.append(
            VariantSummary(
                variant=variant,
                users=len(users),
                requests=int(requests.sum()),
                impressions=int(impressions.sum()),
                clicks=int(clicks.sum()),
                ctr=ratio_of_sums(clicks, impressions, alpha),
                clicks_per_request=ratio_of_sums(clicks, requests, alpha),
            )
        )
    return tuple(summaries)


def _verdict(difference: float, p_value: float, alpha: float) -> str:
    if not np.isfinite(p_value):
        return NOT_ENOUGH_DATA
    if p_value >= alpha:
        return f"no significant difference at α={alpha:g}"
    return "treatment better" if difference > 0 else "control better"


def compare_variants(
    treatment: VariantSummary, control: VariantSummary, alpha: float = 0.05
) -> VariantComparison:
    """CTR of `treatment` against `control`, two independent groups of users.

    Absolute: Δ = R_t - R_c with se² = se_t² + se_c²; the p-value is the two-sided z test
    on it. Relative: R_t / R_c - 1 with the delta-method se² = se_t² / R_c² +
    R_t² se_c² / R_c⁴. When there is too little data for a standard error, the p-value
    is NaN and the verdict says so.
    """
    rate_t, rate_c = np.float64(treatment.ctr.value), np.float64(control.ctr.value)
    se_t, se_c = treatment.ctr.standard_error, control.ctr.standard_error
    difference = rate_t - rate_c
    se_difference = float(np.hypot(se_t, se_c))
    if np.isfinite(se_difference) and se_difference > 0:
        z = difference / se_difference
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    else:
        z, p_value = np.nan, np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = rate_t / rate_c - 1.0
        se_relative = float(np.sqrt(se_t**2 / rate_c**2 + rate_t**2 * se_c**2 / rate_c**4))
    return VariantComparison(
        treatment=treatment.variant,
        control=control.variant,
        absolute_difference=_interval(difference, se_difference, alpha),
        relative_difference=_interval(float(relative), se_relative, alpha),
        z=float(z),
        p_value=p_value,
        alpha=alpha,
        verdict=_verdict(difference, p_value, alpha),
    )


def sample_ratio_check(
    users_per_variant: Mapping[str, int],
    allocation: Mapping[str, float],
    threshold: float = SRM_THRESHOLD,
) -> SampleRatioCheck:
    """Chi-square goodness of fit of users per variant against `allocation` (variant ->
    share; percents or fractions, normalized). p < `threshold` flags a sample-ratio
    mismatch; 0.001 is the usual threshold, since the check runs on every readout and a
    real mismatch (a bug in assignment or logging) gives far smaller p-values."""
    if set(allocation) != set(users_per_variant):
        raise ValueError(
            f"allocation names {sorted(allocation)} but the variants are "
            f"{sorted(users_per_variant)}"
        )
    weights = np.array([allocation[variant] for variant in users_per_variant], dtype=np.float64)
    if not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"allocation shares must be positive numbers, got {dict(allocation)}")
    observed = np.array(list(users_per_variant.values()), dtype=np.float64)
    expected = observed.sum() * weights / weights.sum()
    if observed.sum() == 0:
        chi_square, p_value = np.nan, np.nan
    else:
        chi_square, p_value = stats.chisquare(observed, expected)
    return SampleRatioCheck(
        observed_users={variant: int(n) for variant, n in users_per_variant.items()},
        expected_users=dict(zip(users_per_variant, expected.tolist(), strict=True)),
        chi_square=float(chi_square),
        p_value=float(p_value),
        threshold=threshold,
        mismatch=bool(p_value < threshold),
    )


def interleaving_preference(
    events: pd.DataFrame,
    team_a: str,
    team_b: str,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> InterleavingPreference:
    """Which of two interleaved rankers users prefer (see `InterleavingPreference`).

    Each impression row's variant is the team that contributed the item and each click
    row carries that impression's variant, so a request's credit per team is its click
    rows per label. Resampling clicked requests only changes how many are wins, ties and
    losses, so the bootstrap draws those counts from a multinomial: the same distribution
    as resampling rows, at a cost independent of the number of requests.
    """
    _check_alpha(alpha)
    if team_a == team_b:
        raise ValueError(f"an interleaving test needs two different teams, got {team_a!r} twice")
    rows = _experiment_rows(events, (team_a, team_b))
    is_click = rows["event_type"].eq("click")
    unattributed = int(rows.loc[is_click, "request_id"].isna().sum())
    if unattributed:
        raise ValueError(
            f"{unattributed} click rows have no request_id, so no request can be credited"
        )
    credit = (
        rows.loc[is_click]
        .groupby(["request_id", "variant"], sort=False)
        .size()
        .unstack("variant")
        .reindex(columns=[team_a, team_b], fill_value=0)
        .fillna(0)
    )
    margin = credit[team_a].to_numpy() - credit[team_b].to_numpy()
    wins_a, wins_b = int((margin > 0).sum()), int((margin < 0).sum())
    ties = len(margin) - wins_a - wins_b
    impressions = rows.loc[~is_click, "variant"].value_counts()
    sign_test_p_value = _sign_test(wins_a, wins_b)
    return InterleavingPreference(
        team_a=team_a,
        team_b=team_b,
        requests=int(rows["request_id"].nunique()),
        requests_with_clicks=len(margin),
        impressions_a=int(impressions.get(team_a, 0)),
        impressions_b=int(impressions.get(team_b, 0)),
        clicks_a=int(credit[team_a].sum()),
        clicks_b=int(credit[team_b].sum()),
        wins_a=wins_a,
        wins_b=wins_b,
        ties=ties,
        delta=_preference_delta(wins_a, wins_b, ties, alpha, seed, resamples),
        sign_test_p_value=sign_test_p_value,
        alpha=alpha,
        winner=_winner(team_a, team_b, wins_a, wins_b, sign_test_p_value, alpha),
    )


def _preference_delta(
    wins_a: int, wins_b: int, ties: int, alpha: float, seed: int, resamples: int
) -> Estimate:
    """Δ_AB with a percentile bootstrap interval; its standard error is the bootstrap sd."""
    clicked = wins_a + wins_b + ties
    if clicked == 0:
        return Estimate(np.nan, np.nan, np.nan, np.nan)
    shares = np.array([wins_a, ties, wins_b]) / clicked
    draws = np.random.default_rng(seed).multinomial(clicked, shares, size=resamples)
    deltas = (draws[:, 0] + draws[:, 1] / 2) / clicked - 0.5
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    delta = (wins_a + ties / 2) / clicked - 0.5
    return Estimate(float(delta), float(deltas.std(ddof=1)), float(low), float(high))


def _sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided exact binomial test of wins_a among decisive requests; NaN without any."""
    decisive = wins_a + wins_b
    return float(stats.binomtest(wins_a, decisive, 0.5).pvalue) if decisive else np.nan


def _winner(
    team_a: str, team_b: str, wins_a: int, wins_b: int, p_value: float, alpha: float
) -> str:
    if not np.isfinite(p_value):
        return NOT_ENOUGH_DATA
    if p_value >= alpha:
        return NO_PREFERENCE
    return team_a if wins_a > wins_b else team_b


def experiment_readout(
    events: pd.DataFrame,
    kind: ExperimentKind,
    variants: Sequence[str],
    allocation: Mapping[str, float] | None = None,
    control: str | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    srm_threshold: float = SRM_THRESHOLD,
) -> ExperimentReadout:
    """The readout of one experiment from its raw events.

    "ab": every variant's summary, each other variant against `control` (required; each
    comparison at α, so with several treatments consider α / their number), and the
    sample-ratio check when `allocation` is given. "interleaving": exactly two variants
    (teams); the preference is for the first over the second, or for the non-control team
    over `control` when one is named. `seed` drives the interleaving bootstrap.
    """
    _check_alpha(alpha)
    experiment = experiment_name(variants)
    if control is not None and control not in variants:
        raise ValueError(f"control {control!r} is not one of the variants {list(variants)}")
    if kind == "ab":
        return _ab_readout(events, experiment, variants, allocation, control, alpha, srm_threshold)
    if kind == "interleaving":
        if allocation is not None:
            raise ValueError(
                "allocation applies to A/B tests; interleaving shows both teams to every user"
            )
        if len(variants) != 2:
            raise ValueError(f"an interleaving test has two teams, got {list(variants)}")
        team_a, team_b = variants if control in (None, variants[1]) else variants[::-1]
        preference = interleaving_preference(events, team_a, team_b, alpha, seed)
        return ExperimentReadout(
            experiment=experiment,
            kind=kind,
            alpha=alpha,
            summary=_interleaving_summary(experiment, preference),
            interleaving=preference,
        )
    raise ValueError(f"kind must be one of {EXPERIMENT_KINDS}, got {kind!r}")


def _ab_readout(
    events: pd.DataFrame,
    experiment: str,
    variants: Sequence[str],
    allocation: Mapping[str, float] | None,
    control: str | None,
    alpha: float,
    srm_threshold: float,
) -> ExperimentReadout:
    if control is None:
        raise ValueError("an A/B readout needs the control variant named")
    summaries = ab_variant_summaries(events, variants, alpha)
    by_variant = {summary.variant: summary for summary in summaries}
    comparisons = tuple(
        compare_variants(summary, by_variant[control], alpha)
        for summary in summaries
        if summary.variant != control
    )
    sample_ratio = (
        sample_ratio_check(
            {summary.variant: summary.users for summary in summaries}, allocation, srm_threshold
        )
        if allocation is not None
        else None
    )
    return ExperimentReadout(
        experiment=experiment,
        kind="ab",
        alpha=alpha,
        summary=_ab_summary(experiment, by_variant[control], comparisons, sample_ratio),
        variants=summaries,
        comparisons=comparisons,
        sample_ratio=sample_ratio,
    )


def _ab_summary(
    experiment: str,
    control: VariantSummary,
    comparisons: Sequence[VariantComparison],
    sample_ratio: SampleRatioCheck | None,
) -> str:
    parts = [f"{experiment} (A/B): control {control.variant} CTR {control.ctr.value:.4f}"]
    for comparison in comparisons:
        relative = comparison.relative_difference
        if comparison.verdict == NOT_ENOUGH_DATA:
            parts.append(f"{comparison.treatment}: {NOT_ENOUGH_DATA}")
            continue
        parts.append(
            f"{comparison.treatment} {relative.value:+.1%} "
            f"(CI {relative.ci_low:+.1%} to {relative.ci_high:+.1%}, "
            f"p={comparison.p_value:.2g}): {comparison.verdict}"
        )
    if sample_ratio is not None:
        outcome = "SAMPLE-RATIO MISMATCH" if sample_ratio.mismatch else "sample ratio ok"
        parts.append(f"{outcome} (p={sample_ratio.p_value:.2g})")
    return "; ".join(parts)


def _interleaving_summary(experiment: str, preference: InterleavingPreference) -> str:
    delta = preference.delta
    return (
        f"{experiment} (interleaving): {preference.team_a} vs {preference.team_b} "
        f"Δ={delta.value:+.3f} (CI {delta.ci_low:+.3f} to {delta.ci_high:+.3f}), "
        f"{preference.wins_a} wins / {preference.wins_b} losses / {preference.ties} ties, "
        f"sign test p={preference.sign_test_p_value:.2g}: winner {preference.winner}"
    )
