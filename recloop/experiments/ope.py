"""Off-policy evaluation: a target policy's clicks per request, from another policy's logs.

The log holds lists served by a stochastic logging policy pi_0 (`recloop.inference.policies`),
one row per shown (request, position, item) with its click and the marginal
propensities pi_0(item at p | x) and pi_e(item at p | x) of the target policy pi_e.
The value of a policy is its expected clicks per request, the sum over positions.

Estimators (position-wise, Open Bandit Pipeline's "independent" IIPS family), with
w = pi_e(item at p | x) / pi_0(item at p | x) per row:

- IPS: mean over requests of sum_p w * click.
- SNIPS: per position, sum(w * click) / sum(w), summed over positions. Each term is a
  weighted mean of that position's clicks, so it stays in [0, 1]: biased in small logs
  (the bias shrinks as 1/n), far less noisy than IPS when a few weights are large.
- DM: mean over requests of sum_p qhat_e(x, p), the target's expected model reward
  per position, sum over items a of pi_e(a at p | x) * qhat(x, a, p).
- DR: DM plus the IPS-weighted residual w * (click - qhat(x, item, p)); unbiased when
  either the propensities or the reward model are right.

IPS and DR are unbiased when a click at position p depends on the item at p and on p
only (e.g. the position-based model P(click) = examination(p) * relevance(x, a)) and
pi_0 > 0 wherever pi_e > 0. With one position they are the ordinary single-action
estimators. Slate-level IPS (one weight per list, the ratio of whole-list probabilities)
is left out on purpose: for the lists we serve its weights are useless (an
epsilon-greedy list of 10 from 50 candidates has probability <= epsilon * 40!/50!,
about 1e-17 epsilon, unless it is the greedy one).

Every estimate carries a percentile bootstrap interval (requests resampled with
replacement, seeded) and the effective sample size of the weights, the smallest over
positions of (sum w)^2 / sum w^2: the number of on-policy requests the log is worth for
the target. `ope_gate` turns an estimate into a promotion decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

# Bootstrap resamples are drawn in blocks of at most this many (resample, request) counts.
BOOTSTRAP_BLOCK = 1 << 22
# SlateLog columns converted to float64 and checked for NaN and infinity (request may be text).
_NUMERIC_COLUMNS = (
    "position",
    "reward",
    "logging_propensity",
    "target_propensity",
    "model_reward",
    "target_model_reward",
)


@dataclass(frozen=True)
class SlateLog:
    """Logged impressions, one row per shown (request, position); every array is (n_rows,).

    request: the request each row belongs to (any sortable id); rows are grouped by it.
    position: 0-based position of the row's item in its list.
    reward: the click (0/1) or another finite reward of the row.
    logging_propensity: pi_0(item at position | x), the logged `propensity`, in (0, 1].
    target_propensity: pi_e(item at position | x), in [0, 1].
    model_reward: qhat(x, item, position) of the row, for DR.
    target_model_reward: sum over items a of pi_e(a at position | x) * qhat(x, a, position),
        the target's expected model reward at the row's (request, position), for DM and DR.

    Arrays are validated and converted once, here, so every estimator can trust them.
    """

    request: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    logging_propensity: np.ndarray
    target_propensity: np.ndarray
    model_reward: np.ndarray | None = None
    target_model_reward: np.ndarray | None = None
    # derived: 0..n_requests-1 per row, in the sorted order of the request ids
    request_index: np.ndarray = field(init=False, repr=False)
    n_requests: int = field(init=False)

    def __post_init__(self) -> None:
        request = np.asarray(self.request)
        if request.ndim != 1 or len(request) == 0:
            raise ValueError(f"request must be a non-empty 1-D array, got shape {request.shape}")
        for name in _NUMERIC_COLUMNS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _numeric_column(name, getattr(self, name), request))
        _check_probabilities("logging_propensity", self.logging_propensity, zero_allowed=False)
        _check_probabilities("target_propensity", self.target_propensity, zero_allowed=True)
        if (self.position < 0).any() or (self.position != np.round(self.position)).any():
            raise ValueError("position must hold integers >= 0")
        position = self.position.astype(np.int64)
        _, request_index = np.unique(request, return_inverse=True)
        request_index = request_index.reshape(-1).astype(np.int64)
        n_requests = int(request_index.max()) + 1
        cells = request_index * (int(position.max()) + 1) + position
        if len(np.unique(cells)) != len(cells):
            raise ValueError("a (request, position) pair appears in more than one row")
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "request_index", request_index)
        object.__setattr__(self, "n_requests", n_requests)

    @property
    def weight(self) -> np.ndarray:
        """(n_rows,) importance weight pi_e / pi_0 of each row."""
        return self.target_propensity / self.logging_propensity


def _numeric_column(name: str, values: np.ndarray, request: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != request.shape:
        raise ValueError(f"{name} has shape {array.shape} but request has {request.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} has {int(np.isnan(array).sum())} NaN values")
    if np.isinf(array).any():
        raise ValueError(f"{name} has {int(np.isinf(array).sum())} infinite values")
    return array


def _check_probabilities(name: str, values: np.ndarray, zero_allowed: bool) -> None:
    """Propensities are probabilities; pi_0 must be > 0 or the row's weight is undefined."""
    below = (values < 0) if zero_allowed else (values <= 0)
    if below.any() or (values > 1).any():
        allowed = "[0, 1]" if zero_allowed else "(0, 1]"
        outside = int(below.sum() + (values > 1).sum())
        raise ValueError(f"{name} has {outside} values outside {allowed}")


@dataclass(frozen=True)
class OPEEstimate:
    """A policy value in clicks per request (and per impression), with its uncertainty."""

    estimator: str
    value: float  # expected clicks per request
    ci_low: float
    ci_high: float
    ci_level: float
    value_per_impression: float  # value / mean list length (value / k for full lists)
    ess: float  # effective sample size, smallest over positions
    ess_share: float  # ess / n_requests
    n_requests: int
    n_impressions: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def observed_value(log: SlateLog) -> float:
    """The logging policy's own clicks per request: the bar a target is held to."""
    return float(log.reward.sum() / log.n_requests)


def effective_sample_size(log: SlateLog) -> float:
    """min over positions of (sum w)^2 / sum w^2 (0 where the target never agrees with the log).

    Position by position because each position's term is a weighted mean over requests;
    the worst one limits how much the log says about the target.
    """
    weight = log.weight
    total = np.bincount(log.position, weights=weight)
    squares = np.bincount(log.position, weights=weight**2)
    present = np.bincount(log.position) > 0
    ess = np.divide(total**2, squares, out=np.zeros_like(total), where=squares > 0)
    return float(ess[present].min())


def ips(
    log: SlateLog, *, n_bootstrap: int = 1000, ci_level: float = 0.95, seed: int = 0
) -> OPEEstimate:
    """Independent-position IPS: mean over requests of sum_p w * click."""
    per_request = np.bincount(log.request_index, weights=log.weight * log.reward)
    return _mean_estimate("ips", log, per_request, n_bootstrap, ci_level, seed)


def snips(
    log: SlateLog, *, n_bootstrap: int = 1000, ci_level: float = 0.95, seed: int = 0
) -> OPEEstimate:
    """Self-normalized IPS: per position sum(w * click) / sum(w), summed over positions."""
    n_positions = int(log.position.max()) + 1
    cells = log.request_index * n_positions + log.position
    n_cells = log.n_requests * n_positions
    weighted_reward = np.bincount(cells, weights=log.weight * log.reward, minlength=n_cells)
    weight = np.bincount(cells, weights=log.weight, minlength=n_cells)
    statistics = np.concatenate(
        [
            weighted_reward.reshape(log.n_requests, n_positions),
            weight.reshape(log.n_requests, n_positions),
        ],
        axis=1,
    )

    def value(means: np.ndarray) -> np.ndarray:
        # a position whose weights sum to 0 has no estimate: the value is NaN
        numerator, denominator = means[..., :n_positions], means[..., n_positions:]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (numerator / denominator).sum(axis=-1)

    return _estimate("snips", log, statistics, value, n_bootstrap, ci_level, seed)


def direct_method(
    log: SlateLog, *, n_bootstrap: int = 1000, ci_level: float = 0.95, seed: int = 0
) -> OPEEstimate:
    """DM: mean over requests of sum_p qhat_e(x, p); as good as the reward model."""
    target_model_reward = _required(log, "target_model_reward", "direct_method")
    per_request = np.bincount(log.request_index, weights=target_model_reward)
    return _mean_estimate("dm", log, per_request, n_bootstrap, ci_level, seed)


def doubly_robust(
    log: SlateLog, *, n_bootstrap: int = 1000, ci_level: float = 0.95, seed: int = 0
) -> OPEEstimate:
    """DR: DM plus sum_p w * (click - qhat(x, item, p)), the IPS-corrected model error."""
    target_model_reward = _required(log, "target_model_reward", "doubly_robust")
    model_reward = _required(log, "model_reward", "doubly_robust")
    row_value = target_model_reward + log.weight * (log.reward - model_reward)
    per_request = np.bincount(log.request_index, weights=row_value)
    return _mean_estimate("dr", log, per_request, n_bootstrap, ci_level, seed)


def _required(log: SlateLog, name: str, estimator: str) -> np.ndarray:
    value = getattr(log, name)
    if value is None:
        raise ValueError(f"{estimator} needs {name} in the log")
    return value


def _mean_estimate(
    name: str,
    log: SlateLog,
    per_request: np.ndarray,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> OPEEstimate:
    """Estimators that are a plain mean of one number per request (IPS, DM, DR)."""
    return _estimate(
        name, log, per_request[:, None], lambda means: means[..., 0], n_bootstrap, ci_level, seed
    )


def _estimate(
    name: str,
    log: SlateLog,
    statistics: np.ndarray,
    value_from_means: Callable[[np.ndarray], np.ndarray],
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> OPEEstimate:
    """An estimator is a function of per-request statistic means: (n_requests, m) -> value."""
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    value = float(value_from_means(statistics.mean(axis=0)))
    resampled = value_from_means(_bootstrap_means(statistics, n_bootstrap, seed))
    tail = (1.0 - ci_level) / 2.0
    # a resample can leave an estimator undefined (SNIPS: a position's weights sum to 0);
    # the interval is taken over the defined ones, NaN only if none is
    ci_low, ci_high = (
        np.nanquantile(resampled, [tail, 1.0 - tail])
        if np.isfinite(resampled).any()
        else (np.nan, np.nan)
    )
    n_requests, n_impressions = log.n_requests, len(log.reward)
    ess = effective_sample_size(log)
    return OPEEstimate(
        estimator=name,
        value=value,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        ci_level=ci_level,
        value_per_impression=value * n_requests / n_impressions,
        ess=ess,
        ess_share=ess / n_requests,
        n_requests=n_requests,
        n_impressions=n_impressions,
    )


def _bootstrap_means(statistics: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, m) column means of requests resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(statistics)
    block = max(1, BOOTSTRAP_BLOCK // n)
    means = []
    for start in range(0, n_bootstrap, block):
        size = min(block, n_bootstrap - start)
        drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        means.append(counts @ statistics / n)
    return np.concatenate(means)


@dataclass(frozen=True)
class OPEGateResult:
    """Promotion verdict from an OPE estimate; `decided` is False when the log cannot tell."""

    decided: bool
    passed: bool
    reason: str
    estimator: str
    value: float
    ci_low: float
    logged_value: float
    threshold: float
    ess: float
    min_ess: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def ope_gate(
    candidate: OPEEstimate, logged_value: float, min_ess: float, tolerance: float
) -> OPEGateResult:
    """Pass when the candidate's CI lower bound >= logged_value * (1 - tolerance).

    The lower bound, not the estimate: promotion serves the candidate to everyone, an
    estimate from a few hundred effective requests is noisy, and picking the best of
    several candidates by their estimates favours the lucky one. The bound makes a pass
    mean "not worse by more than the tolerance, at the interval's confidence".
    With ESS below min_ess the log says too little about the candidate's lists: the gate
    is undecided (collect more exploration data), which is not a failure.
    `tolerance` is relative, like the offline champion gate's.
    """
    if not np.isfinite(logged_value) or logged_value < 0:
        raise ValueError(f"logged_value must be a finite number >= 0, got {logged_value!r}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if min_ess < 0:
        raise ValueError(f"min_ess must be >= 0, got {min_ess!r}")
    threshold = logged_value * (1.0 - tolerance)
    numbers = {
        "estimator": candidate.estimator,
        "value": candidate.value,
        "ci_low": candidate.ci_low,
        "logged_value": logged_value,
        "threshold": threshold,
        "ess": candidate.ess,
        "min_ess": min_ess,
    }
    if not candidate.ess >= min_ess:
        reason = (
            f"not enough logged data: ESS {candidate.ess:.1f} < {min_ess:g} "
            f"({candidate.ess_share:.1%} of {candidate.n_requests} requests)"
        )
        return OPEGateResult(decided=False, passed=False, reason=reason, **numbers)
    passed = bool(candidate.ci_low >= threshold)
    comparison = ">=" if passed else "<"
    reason = (
        f"{candidate.estimator} {candidate.ci_level:.0%} CI lower bound {candidate.ci_low:.4f} "
        f"{comparison} {threshold:.4f} = logged {logged_value:.4f} x (1 - {tolerance:g}); "
        f"estimate {candidate.value:.4f}, ESS {candidate.ess:.0f}"
    )
    return OPEGateResult(decided=True, passed=passed, reason=reason, **numbers)
