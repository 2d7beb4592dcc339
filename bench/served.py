"""What the served HTTP API recommends on a held-out split, against the baselines fitted
in the same process on the same data.

    .venv/bin/python -m bench.served [--algorithms ease two_tower multi_stage]
                                     [--protocols per_user global]

A user brings their own log: MovieLens-100K's positive ratings (>= 4) up to a cut go into
a fresh data directory as the raw event log, the pipeline runs as `make demo` runs it
(validation, dbt, Feast, the champion chain with its gates) for each algorithm, the
BentoML service starts over HTTP, and every test user's top 10 is asked of
`/recommend`. The rest of each user's positives is the test part, never seen by
anything that is fitted. Protocols:

- per_user: each user's positives in time order, the first 80 % fed, the last 20 % test
  (every test user has history);
- global: one time cut at the 80 % quantile of all positives (test users include users
  who arrive after it, whom only features or popularity can serve).

The baselines (popularity, ItemKNN, EASE with its L2 chosen on the validation part,
the last stretch of the fed part, ALS at its defaults) are fitted on the fed part in this
process and scored on the same users with the same history masked; a user with no fed
history gets popularity from each of them, as from the service. A champion the gates block
serves nothing; the table says which gates blocked it (`--forced` relaxes the gates
against popularity, to measure what such a model would serve). Prints a table and writes
bench/results/served.json (served-forced.json with --forced).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from tqdm import tqdm

from drivers.demo import DemoError, run_feature_jobs, train_and_promote
from drivers.launcher import post_json, serve
from recloop.data.layout import DataLayout
from recloop.data.movielens import (
    RawLog,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    to_raw_log,
    write_raw_log,
)
from recloop.evaluation.metrics import ndcg_at_k, recall_at_k
from recloop.evaluation.splits import (
    Interactions,
    Split,
    chronological_split_per_user,
    index_interactions,
    temporal_split,
)
from recloop.models.baselines import ALS, EASE, ItemKNN, Popularity, recommend
from recloop.models.ease_model import L2_GRID, search_l2_on
from recloop.registry.model_registry import Registry
from recloop.settings import CHAMPION_ALGORITHMS, Settings

RESULTS = Path(__file__).resolve().parent / "results" / "served.json"
# --forced: the gates that judge quality against popularity let everything through; the
# sanity gates still hold.
FORCED_GATES = {
    "min_lift_over_popularity": -1.0,
    "min_coverage_ratio": 0.0,
    "max_popularity_ratio": 100.0,
}
TENANT = "heldout"
K = 10
MIN_RATING = 4.0
PROTOCOLS: dict[str, Callable[[Interactions], Split]] = {
    # the fed part is train + validation (the baselines tune on validation, then refit)
    "per_user": lambda data: chronological_split_per_user(data, (0.72, 0.08, 0.2)),
    "global": lambda data: temporal_split(data, valid_fraction=0.08, test_fraction=0.2),
}


@dataclass(frozen=True)
class HeldOut:
    """One protocol's fed log, and the test part in the fed part's index space."""

    name: str
    log: RawLog
    split: Split

    @property
    def fed(self) -> Interactions:
        return concatenate(self.split.train, self.split.valid)


def concatenate(first: Interactions, second: Interactions) -> Interactions:
    return Interactions(
        np.concatenate([first.users, second.users]),
        np.concatenate([first.items, second.items]),
        np.concatenate([first.timestamps, second.timestamps]),
        first.user_ids,
        first.item_ids,
    )


def held_out(name: str, log: RawLog) -> HeldOut:
    """The positives of `log` split by the protocol; the log keeps only the fed events."""
    positives = log.events.loc[log.events["value"] >= MIN_RATING].reset_index(drop=True)
    item_ids = np.sort(log.items["item_id"].unique())
    split = PROTOCOLS[name](index_interactions(positives, item_ids=item_ids))
    test = split.test
    held = pd.DataFrame(
        {
            "user_id": test.user_ids[test.users],
            "item_id": test.item_ids[test.items],
            "timestamp": test.timestamps,
        }
    )
    stamps = positives["event_timestamp"].astype("int64") // 10**9
    keys = pd.DataFrame(
        {"user_id": positives["user_id"], "item_id": positives["item_id"], "timestamp": stamps}
    )
    merged = keys.merge(held.drop_duplicates(), how="left", indicator=True)
    is_test = merged["_merge"].eq("both").to_numpy()
    fed = RawLog(log.tenant, positives.loc[~is_test].reset_index(drop=True), log.users, log.items)
    return HeldOut(name, fed, split)


def score(top_k: np.ndarray, relevant: list[np.ndarray]) -> dict[str, float]:
    return {"ndcg@10": ndcg_at_k(top_k, relevant), "recall@10": recall_at_k(top_k, relevant)}


def baselines(protocol: HeldOut) -> dict[str, dict[str, float]]:
    """Each baseline fitted on the fed part, ranked for the test users, history masked."""
    split, fed = protocol.split, protocol.fed.matrix()
    users = np.flatnonzero([len(items) > 0 for items in split.test.per_user()])
    relevant = [split.test.per_user()[user] for user in users]
    l2 = search_l2_on(split.train.matrix(), split.valid.matrix(), L2_GRID, K).l2
    models = {
        "popularity": Popularity(),
        "itemknn": ItemKNN(),
        "ease": EASE(l2=l2),
        "als": ALS(seed=0),
    }
    popular = recommend(Popularity().fit(fed), users, fed, K)
    without_history = np.diff(fed.indptr)[users] == 0
    results = {}
    for name, model in models.items():
        top_k = recommend(model.fit(fed), users, fed, K)
        # a user with no fed history gets popularity, as the service answers them
        top_k[without_history] = popular[without_history]
        results[name] = {**score(top_k, relevant), **({"l2": l2} if name == "ease" else {})}
    return results


def served(
    protocol: HeldOut, algorithm: str, root: Path, gates: dict[str, float]
) -> dict[str, object]:
    """Run the pipeline on the fed log with `algorithm` as the champion's kind (`gates`
    overrides thresholds), then ask the service for every test user's top 10."""
    settings = Settings(
        data_dir=root / f"{protocol.name}-{algorithm}", champion_algorithm=algorithm
    )
    layout = DataLayout(settings.data_dir)
    write_raw_log(protocol.log, layout)
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        defs = run_feature_jobs(settings, instance)
        try:
            train_and_promote(defs, instance, gates)
        except DemoError:
            return {
                "served": False,
                "blocked_by": blocking_gates(Registry.of(settings)),
                "holdout": holdout_metrics(Registry.of(settings)),
            }
    trained_s = time.perf_counter() - started
    test = protocol.split.test
    item_index = {item: n for n, item in enumerate(test.item_ids)}
    users = np.flatnonzero([len(items) > 0 for items in test.per_user()])
    top_k = np.full((len(users), K), -1, dtype=np.int64)
    fallbacks = 0
    with serve(settings) as url:
        for row, user in enumerate(tqdm(users, desc=f"{algorithm} over HTTP", unit="user")):
            answer = post_json(f"{url}/recommend", {"user_id": str(test.user_ids[user]), "k": K})
            listed = [item_index[item["item_id"]] for item in answer["items"]]
            top_k[row, : len(listed)] = listed
            fallbacks += answer.get("fallback") is not None
    relevant = [test.per_user()[user] for user in users]
    return {
        "served": True,
        "holdout": holdout_metrics(Registry.of(settings)),
        **score(top_k, relevant),
        "fallback_share": fallbacks / len(users),
        "pipeline_s": trained_s,
    }


def candidate_version(registry: Registry) -> str:
    """The model the run trained: the champion, or the one version a blocked run left."""
    (version,) = [registry.champion()] if registry.champion() else registry.versions()
    return version


def holdout_metrics(registry: Registry) -> dict[str, float]:
    """NDCG@10 of the candidate and of popularity on the pipeline's own test part."""
    metadata = registry.metadata(candidate_version(registry))
    return {
        "candidate ndcg@10": metadata["metrics"]["all"]["ndcg@10"],
        "popularity ndcg@10": metadata["popularity"]["ndcg@10"],
    }


def blocking_gates(registry: Registry) -> list[str]:
    """The failed gates' details of the candidate a blocked run registered."""
    results = registry.metadata(candidate_version(registry))["gate"]["results"]
    return [f"{r['name']}: {r['detail']}" for r in results if not r["passed"]]


def table(report: dict[str, dict]) -> list[str]:
    header = (
        f"{'protocol':<10}{'model':<22}{'ndcg@10':>9}{'recall@10':>10}{'x EASE':>8}{'fallback':>10}"
    )
    lines = [header, "-" * len(header)]
    for protocol, models in report.items():
        ease = models["ease"]["ndcg@10"]
        for name, result in models.items():
            if not result.get("served", True):
                lines.append(f"{protocol:<10}{name:<22}  blocked, nothing served:")
                lines += [f"{'':<34}{gate}" for gate in result["blocked_by"]]
                continue
            fallback = result.get("fallback_share")
            lines.append(
                f"{protocol:<10}{name:<22}{result['ndcg@10']:>9.4f}{result['recall@10']:>10.4f}"
                f"{result['ndcg@10'] / ease:>8.3f}"
                + (f"{fallback:>10.3f}" if fallback is not None else f"{'':>10}")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--algorithms", nargs="+", choices=CHAMPION_ALGORITHMS, default=list(CHAMPION_ALGORITHMS)
    )
    parser.add_argument(
        "--protocols", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS)
    )
    parser.add_argument(
        "--forced",
        action="store_true",
        help="relax the gates against popularity (what `recloop models promote --force` "
        "would serve), to measure a kind the gates block",
    )
    args = parser.parse_args(argv)
    gates = FORCED_GATES if args.forced else {}
    started = time.perf_counter()
    cache = Settings.from_env().data_dir / "cache"
    log = to_raw_log(read_ml100k_wheel(fetch_recbole_wheel(cache)), TENANT)
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="recloop-served-") as root:
        for name in args.protocols:
            protocol = held_out(name, log)
            report[name] = baselines(protocol)
            for algorithm in args.algorithms:
                report[name][f"served {algorithm}"] = served(protocol, algorithm, Path(root), gates)
                print("\n".join(table({name: report[name]})))
    lines = table(report)
    print("\n".join(lines))
    results = RESULTS.with_name("served-forced.json") if args.forced else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "dataset": "MovieLens-100K, ratings >= 4",
                "k": K,
                "gate_overrides": gates,
                "python": platform.python_version(),
                "elapsed_s": time.perf_counter() - started,
                "protocols": report,
            },
            indent=2,
            sort_keys=True,
        )
    )
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
