"""Offline quality on MovieLens-100K: the multi-stage recommender, the two-tower alone and
the strong baselines, three protocols, several seeds, one process.

    .venv/bin/python -m bench.quality [--seeds 0 1 2] [--protocols recbole chronological temporal]
                                      [--two-tower-trials 10] [--fast]

`--fast` leaves the two-tower out (alone and as a source) and ALS at its defaults: the
two-tower's fits are most of the run's hours on 2 cores, the rest takes minutes.

Protocols (train / validation / test 8:1:1 in each):
- recbole: every rating a positive, each user's ratings shuffled and cut (RecBole's
  protocol, so numbers compare with published ones); the seed also draws the split;
- chronological: ratings >= 4, each user's ratings in time order (next items);
- temporal: ratings >= 4, global time cut-offs (what the pipeline's gates use).

Everything is tuned on the validation part only: ALS by grid and the two-tower by
Optuna (TPE, `--two-tower-trials`), both on the first seed of a protocol and reused for
the others; EASE's L2 by grid (every seed); the two-tower's epochs by early stopping; the multi-stage recommender takes the tuned EASE and ALS settings and draws
its ranker's labels from inside the training part. The test part is read once, for
the table. Models read the catalog (demographics; genres, release year and the MiniLM
embedding of title and genres), not Feast: RecBole's protocol has no time order to
join on. Diversity is measured in the MiniLM embedding space, the same for every model.

Prints a table (mean ± sd over seeds) and writes bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from recloop.data.movielens import fetch_recbole_wheel, read_ml100k_wheel, to_raw_log
from recloop.evaluation.metrics import (
    EvaluationInputs,
    evaluate_item_segments,
    evaluate_segments,
    ndcg_at_k,
)
from recloop.evaluation.splits import (
    Interactions,
    Split,
    chronological_split_per_user,
    index_interactions,
    random_split_per_user,
    temporal_split,
)
from recloop.features.catalog_features import item_feature_matrix, user_feature_matrix
from recloop.features.text_embeddings import embed_items, embedding_matrix
from recloop.models.baselines import (
    ALS,
    EASE,
    ItemKNN,
    Popularity,
    PopularityForStrangers,
    Recommender,
    recommend,
)
from recloop.models.candidate_sources import (
    ItemToItemSource,
    MatrixFactorisationSource,
    RecentNeighboursSource,
    TrendingSource,
    TwoTowerSource,
)
from recloop.models.configs import TwoTowerConfig
from recloop.models.ease_model import search_l2_on
from recloop.models.multi_stage import (
    LabelWindow,
    LabelWindowKind,
    MultiStageRecommender,
    StageConfig,
)
from recloop.models.two_tower import TwoTowerRecommender
from recloop.settings import Settings
from recloop.training.tuning import tune_two_tower

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
ALS_GRID = {
    "factors": (32, 64, 128),
    "regularization": (0.01, 0.1, 1.0),
    "alpha": (1.0, 5.0, 20.0),
}
EASE_GRID = (50.0, 100.0, 250.0, 500.0, 1000.0)
COLD_USER_INTERACTIONS = 5
MULTI_STAGE_FOLDS = 2
# The acceptance goals of the served recommender and the two-tower, as ratios.
GOALS = {
    "multi_stage / ease ndcg@10": 1.05,
    "two_tower / ease ndcg@10": 0.95,
    "multi_stage cold-item / warm-item recall@10": 0.5,
    "multi_stage / popularity cold-user ndcg@10": 1.1,
}


@dataclass(frozen=True)
class Protocol:
    name: str
    min_rating: float | None  # None: every rating is a positive
    label_window: LabelWindowKind  # how the multi-stage ranker draws labels from training
    split: Callable[[Interactions, int], Split]


PROTOCOLS = {
    "recbole": Protocol(
        "recbole", None, "random", lambda data, seed: random_split_per_user(data, seed=2020 + seed)
    ),
    "chronological": Protocol(
        "chronological", 4.0, "latest", lambda data, seed: chronological_split_per_user(data)
    ),
    "temporal": Protocol("temporal", 4.0, "global", lambda data, seed: temporal_split(data)),
}


@dataclass(frozen=True)
class Catalog:
    events: pd.DataFrame
    item_ids: np.ndarray
    users: pd.DataFrame
    item_features: np.ndarray  # genres and year, then the MiniLM embedding
    text_embeddings: np.ndarray  # the MiniLM embedding alone, for diversity


def load_catalog(settings: Settings) -> Catalog:
    log = to_raw_log(read_ml100k_wheel(fetch_recbole_wheel(settings.data_dir / "cache")), "ml100k")
    item_ids = np.sort(log.items["item_id"].unique())
    texts = embed_items(
        log.items.drop_duplicates("item_id", keep="last"),
        settings.data_dir / "cache" / "item_text_embeddings.parquet",
    )
    text = embedding_matrix(texts.embeddings, list(item_ids))
    return Catalog(
        events=log.events,
        item_ids=item_ids,
        users=log.users,
        item_features=np.hstack([item_feature_matrix(log.items, item_ids), text]),
        text_embeddings=text,
    )


def validation_ndcg(model: Recommender, split: Split, k: int) -> float:
    train = split.train.matrix()
    users = np.arange(split.train.n_users)
    return ndcg_at_k(recommend(model, users, train, k), split.valid.per_user())


def tune_als(split: Split, k: int, seed: int) -> tuple[dict[str, float], float]:
    """ALS hyperparameters by validation NDCG@k (test is never looked at)."""
    best: tuple[float, dict[str, float]] = (-1.0, {})
    grid = list(itertools.product(*ALS_GRID.values()))
    for values in tqdm(grid, desc="tune ALS on validation", unit="fit", leave=False):
        params = dict(zip(ALS_GRID, values, strict=True))
        score = validation_ndcg(ALS(seed=seed, **params).fit(split.train.matrix()), split, k)
        if score > best[0]:
            best = (score, params)
    return best[1], best[0]


def tune_ease(split: Split, k: int) -> tuple[float, float]:
    """EASE's L2 by validation NDCG@k, as the pipeline's chain chooses it."""
    search = search_l2_on(split.train.matrix(), split.valid.matrix(), EASE_GRID, k)
    return search.l2, max(trial[f"valid_ndcg@{k}"] for trial in search.trials)


def two_tower_validation(
    split: Split, user_features: np.ndarray, item_features: np.ndarray
) -> Callable[[TwoTowerConfig], float]:
    """The two-tower's best validation NDCG@10 under a configuration (early stopping)."""

    def score(config: TwoTowerConfig) -> float:
        model = TwoTowerRecommender(
            user_features, item_features, config, split.valid.per_user(), progress=False
        )
        return model.fit(split.train.matrix()).result.best_score

    return score


def evaluate_model(
    model: Recommender | MultiStageRecommender, split: Split, k: int, catalog: Catalog
) -> dict[str, dict[str, float]]:
    """Fit on train, rank for test with train + validation masked; overall and per segment."""
    train = split.train.matrix()
    seen = (train + split.valid.matrix()).tocsr()
    users = np.arange(split.train.n_users)
    started = time.perf_counter()
    if isinstance(model, MultiStageRecommender):
        model.fit(split.train)
    else:
        model.fit(train)
    top_k = recommend(model, users, seen, k)
    elapsed = time.perf_counter() - started
    inputs = EvaluationInputs(
        n_items=split.train.n_items,
        n_users=split.train.n_users,
        item_popularity=np.asarray(train.sum(axis=0)).ravel(),
        item_vectors=catalog.text_embeddings,
    )
    relevant = split.test.per_user()
    cold_users = np.diff(train.indptr) < COLD_USER_INTERACTIONS
    results = evaluate_segments(top_k, relevant, inputs, {"cold_users": cold_users})
    results["all"]["fit_and_rank_s"] = elapsed
    return {**results, **evaluate_item_segments(top_k, relevant, inputs)}


def run_protocol(
    protocol: Protocol,
    catalog: Catalog,
    seeds: list[int],
    k: int,
    two_tower_trials: int,
    fast: bool = False,
) -> dict[str, object]:
    events = catalog.events
    if protocol.min_rating is not None:
        events = events.loc[events["value"] >= protocol.min_rating]
    data = index_interactions(events, item_ids=catalog.item_ids)
    user_features = user_feature_matrix(catalog.users, data.user_ids)
    item_features = catalog.item_features
    runs = []
    als_params: dict[str, float] = {}
    two_tower = TwoTowerConfig()
    for seed in seeds:
        split = protocol.split(data, seed)
        tuning: dict[str, object] = {}
        if not als_params and not fast:
            als_params, tuning["als_valid_ndcg"] = tune_als(split, k, seed)
            search = tune_two_tower(
                two_tower_validation(split, user_features, item_features),
                replace(two_tower, seed=seed),
                two_tower_trials,
                seed,
            )
            two_tower = search.best
            tuning["two_tower_search"] = {"best": search.best_score, "trials": search.trials}
        tuned = replace(two_tower, seed=seed)
        l2, tuning["ease_valid_ndcg"] = tune_ease(split, k)
        tuning.update(als=als_params, ease_l2=l2, two_tower=tuned.to_dict())

        def sources(
            seed: int = seed, l2: float = l2, als: dict = als_params, tuned: TwoTowerConfig = tuned
        ) -> list:
            learned = [] if fast else [TwoTowerSource(user_features, item_features, tuned)]
            return [
                ItemToItemSource(l2=l2),
                MatrixFactorisationSource(seed=seed, **als),
                *learned,
                TrendingSource(),
                RecentNeighboursSource(),
            ]

        multi_stage = MultiStageRecommender(
            sources,
            item_features,
            StageConfig(
                candidates={
                    "item_to_item": 100,
                    "matrix_factorisation": 50,
                    **({} if fast else {"two_tower": 100}),
                    "trending": 30,
                    "recent_neighbours": 50,
                },
                label_window=LabelWindow(
                    protocol.label_window, share=0.125, seed=seed, folds=MULTI_STAGE_FOLDS
                ),
            ),
        )
        models: list[Recommender | MultiStageRecommender] = [
            Popularity(),
            # A user with no training history gets popularity from every baseline, as
            # from the multi-stage recommender (the temporal protocol has such users).
            PopularityForStrangers(ItemKNN()),
            PopularityForStrangers(EASE(l2=l2)),
            PopularityForStrangers(ALS(seed=seed, **als_params)),
            *(
                []
                if fast
                else [
                    TwoTowerRecommender(
                        user_features,
                        item_features,
                        tuned,
                        validation=split.valid.per_user(),
                        progress=False,
                    )
                ]
            ),
            multi_stage,
        ]
        metrics = {}
        for model in tqdm(models, desc=f"{protocol.name} seed {seed}", unit="model"):
            metrics[model.name] = evaluate_model(model, split, k, catalog)
        runs.append(
            {
                "seed": seed,
                "sizes": split.describe(),
                "tuning": tuning,
                "multi_stage": multi_stage.report,
                "models": metrics,
            }
        )
    return {"protocol": runs[0]["sizes"]["protocol"], "runs": runs}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; inf when only the denominator is 0, nan when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return numerator / denominator


def mean_sd(runs: list[dict], model: str, segment: str, metric: str) -> tuple[float, float]:
    values = [run["models"][model].get(segment, {}).get(metric, np.nan) for run in runs]
    return float(np.nanmean(values)), float(np.nanstd(values))


def summarise(report: dict[str, dict], k: int) -> tuple[list[str], dict[str, dict]]:
    """The table's lines and each protocol's goal ratios."""
    ndcg, recall = f"ndcg@{k}", f"recall@{k}"
    header = (
        f"{'protocol':<14}{'model':<21}{ndcg:>16}{recall:>16}{'x EASE':>8}{'coverage':>9}"
        f"{'novelty':>8}{'gini':>6}{'divers.':>8}{'cold-user':>10}{'cold/warm':>10}"
    )
    lines = [header, "-" * len(header)]
    goals = {}
    for name, result in report.items():
        runs = result["runs"]
        ease = mean_sd(runs, "ease", "all", ndcg)[0]
        for model in runs[0]["models"]:
            n_mean, n_sd = mean_sd(runs, model, "all", ndcg)
            r_mean, r_sd = mean_sd(runs, model, "all", recall)
            cold_user = mean_sd(runs, model, "cold_users", ndcg)[0]
            cold_item = mean_sd(runs, model, "cold_items", recall)[0]
            warm_item = mean_sd(runs, model, "warm_items", recall)[0]
            lines.append(
                f"{name:<14}{model:<21}{n_mean:>9.4f}±{n_sd:.4f}{r_mean:>9.4f}±{r_sd:.4f}"
                f"{ratio(n_mean, ease):>8.3f}{mean_sd(runs, model, 'all', 'coverage')[0]:>9.3f}"
                f"{mean_sd(runs, model, 'all', 'novelty')[0]:>8.2f}"
                f"{mean_sd(runs, model, 'all', 'exposure_gini')[0]:>6.3f}"
                f"{mean_sd(runs, model, 'all', 'diversity')[0]:>8.3f}"
                f"{cold_user:>10.4f}{ratio(cold_item, warm_item):>10.3f}"
            )

        def mean(model: str, segment: str, metric: str, runs: list = runs) -> float:
            return mean_sd(runs, model, segment, metric)[0]

        goals[name] = {
            "multi_stage / ease ndcg@10": ratio(mean("multi_stage", "all", ndcg), ease),
            "two_tower / ease ndcg@10": (
                ratio(mean("two_tower", "all", ndcg), ease)
                if "two_tower" in runs[0]["models"]
                else float("nan")
            ),
            "multi_stage cold-item / warm-item recall@10": ratio(
                mean("multi_stage", "cold_items", recall), mean("multi_stage", "warm_items", recall)
            ),
            "multi_stage / popularity cold-user ndcg@10": ratio(
                mean("multi_stage", "cold_users", ndcg), mean("popularity", "cold_users", ndcg)
            ),
        }
    return lines, goals


def write_results(args: argparse.Namespace, report: dict, goals: dict, elapsed_s: float) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "dataset": "MovieLens-100K",
        "k": args.k,
        "seeds": args.seeds,
        "two_tower_trials": args.two_tower_trials,
        "fast": args.fast,
        "python": platform.python_version(),
        "elapsed_s": elapsed_s,
        "goals": {"targets": GOALS, "reached": goals},
        "protocols": report,
    }
    RESULTS.write_text(json.dumps(summary, indent=2, sort_keys=True, default=float))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--two-tower-trials", type=int, default=10)
    parser.add_argument("--fast", action="store_true", help="no two-tower, ALS at defaults")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch's intra-op threads; 1 by default: on 2 shared cores, torch's spinning pool "
        "made a two-tower epoch 3x slower (14 s against 4.9 s) beside one other busy process",
    )
    parser.add_argument(
        "--protocols", nargs="+", choices=sorted(PROTOCOLS), default=list(PROTOCOLS)
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    catalog = load_catalog(Settings.from_env())
    started = time.perf_counter()
    report = {}
    for name in args.protocols:
        report[name] = run_protocol(
            PROTOCOLS[name], catalog, args.seeds, args.k, args.two_tower_trials, args.fast
        )
        # Written after each protocol: a long run that stops early keeps what it measured.
        write_results(args, report, {}, time.perf_counter() - started)
    lines, goals = summarise(report, args.k)
    print("\n".join(lines))
    print(f"\n{'goal':<48}{'target':>8}" + "".join(f"{name:>15}" for name in goals))
    for goal, target in GOALS.items():
        values = "".join(f"{goals[name][goal]:>15.3f}" for name in goals)
        print(f"{goal:<48}{target:>8.2f}{values}")
    write_results(args, report, goals, time.perf_counter() - started)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
