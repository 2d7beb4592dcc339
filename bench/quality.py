"""Offline quality of the baselines on MovieLens-100K, two protocols, one process.

    .venv/bin/python -m bench.quality [--k 10] [--seed 2020]

The two-tower model reads the catalog (demographics; genres, release year and the
MiniLM embedding of title and genres), not Feast: both protocols need features for
every split, and RecBole's has no time order to join on. The pipeline's own model
(assets/training.py) uses Feast's point-in-time features instead.

Protocols: RecBole's (each user's ratings shuffled 8:1:1, every rating a positive,
full ranking, seen items masked) so numbers compare with published ones, and a
temporal split (the one a retraining system lives with). ALS is tuned on the
validation part and the two-tower model stops early on validation NDCG@10; the
table reports the test part. Prints a table and writes bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recloop.data.movielens import fetch_recbole_wheel, read_ml100k_wheel, to_raw_log
from recloop.evaluation.metrics import (
    EvaluationInputs,
    evaluate_item_segments,
    evaluate_segments,
    ndcg_at_k,
)
from recloop.evaluation.splits import (
    Split,
    index_interactions,
    random_split_per_user,
    temporal_split,
)
from recloop.features.catalog_features import item_feature_matrix, user_feature_matrix
from recloop.features.text_embeddings import embed_items, embedding_matrix
from recloop.models.baselines import ALS, EASE, ItemKNN, Popularity, Recommender, recommend
from recloop.models.configs import TwoTowerConfig
from recloop.models.two_tower import TwoTowerRecommender
from recloop.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
ALS_GRID = {
    "factors": (32, 64, 128),
    "regularization": (0.01, 0.1, 1.0),
    "alpha": (1.0, 5.0, 20.0),
}


def tune_als(split: Split, k: int, seed: int) -> tuple[ALS, dict[str, float]]:
    """Pick ALS hyperparameters by validation NDCG@k (test is never looked at)."""
    train = split.train.matrix()
    users = np.arange(split.train.n_users)
    relevant = split.valid.per_user()
    best: tuple[float, dict[str, float]] = (-1.0, {})
    grid = list(itertools.product(*ALS_GRID.values()))
    for values in tqdm(grid, desc="tune ALS on validation", unit="fit"):
        params = dict(zip(ALS_GRID, values, strict=True))
        model = ALS(seed=seed, **params).fit(train)
        score = ndcg_at_k(recommend(model, users, train, k), relevant)
        if score > best[0]:
            best = (score, params)
    return ALS(seed=seed, **best[1]), {"valid_ndcg": best[0], **best[1]}


def evaluate_model(model: Recommender, split: Split, k: int) -> dict[str, dict[str, float]]:
    """Fit on train, rank for test with train + validation masked; overall and per segment."""
    train = split.train.matrix()
    seen = (train + split.valid.matrix()).tocsr()
    users = np.arange(split.train.n_users)
    started = time.perf_counter()
    model.fit(train)
    top_k = recommend(model, users, seen, k)
    elapsed = time.perf_counter() - started
    popularity = np.asarray(train.sum(axis=0)).ravel()
    inputs = EvaluationInputs(
        n_items=split.train.n_items, n_users=split.train.n_users, item_popularity=popularity
    )
    relevant = split.test.per_user()
    cold_users = np.diff(train.indptr) < 5
    results = evaluate_segments(top_k, relevant, inputs, {"cold_users": cold_users})
    results["all"]["fit_and_rank_s"] = elapsed
    return {**results, **evaluate_item_segments(top_k, relevant, inputs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    log = to_raw_log(read_ml100k_wheel(fetch_recbole_wheel(settings.data_dir / "cache")), "ml100k")
    data = index_interactions(log.events, item_ids=np.sort(log.items["item_id"].unique()))
    user_features = user_feature_matrix(log.users, data.user_ids)
    texts = embed_items(
        log.items.drop_duplicates("item_id", keep="last"),
        settings.data_dir / "cache" / "item_text_embeddings.parquet",
    )
    item_features = np.hstack(
        [
            item_feature_matrix(log.items, data.item_ids),
            embedding_matrix(texts.embeddings, list(data.item_ids)),
        ]
    )
    report: dict[str, object] = {
        "dataset": "MovieLens-100K (every rating a positive)",
        "k": args.k,
        "seed": args.seed,
        "python": platform.python_version(),
        "protocols": {},
    }
    rows = []
    for split in (random_split_per_user(data, seed=args.seed), temporal_split(data)):
        als, als_choice = tune_als(split, args.k, args.seed)
        two_tower = TwoTowerRecommender(
            user_features,
            item_features,
            TwoTowerConfig(seed=args.seed),
            validation=split.valid.per_user(),
        )
        models: list[Recommender] = [Popularity(), ItemKNN(), EASE(), als, two_tower]
        per_model = {}
        for model in models:
            per_model[model.name] = evaluate_model(model, split, args.k)
            overall = per_model[model.name]["all"]
            segments = per_model[model.name]
            cold = segments.get("cold_items", {}).get(f"recall@{args.k}")
            warm = segments.get("warm_items", {}).get(f"recall@{args.k}")
            protocol = split.protocol.split(":")[0].split(" (")[0]
            rows.append((protocol, model.name, overall, cold, warm))
        report["protocols"][split.protocol] = {
            "sizes": split.describe(),
            "als_tuning": als_choice,
            "models": per_model,
        }
    k = args.k
    header = f"{'protocol':<18}{'model':<12}{'ndcg@' + str(k):>9}{'recall@' + str(k):>11}{'map@' + str(k):>8}{'coverage':>10}{'novelty':>9}{'gini':>7}{'cold rec':>10}{'warm rec':>10}"
    print(header)
    print("-" * len(header))
    for protocol, name, m, cold, warm in rows:
        cold_text = f"{cold:.4f}" if cold is not None else "-"
        warm_text = f"{warm:.4f}" if warm is not None else "-"
        print(
            f"{protocol:<18}{name:<12}{m[f'ndcg@{k}']:>9.4f}{m[f'recall@{k}']:>11.4f}{m[f'map@{k}']:>8.4f}"
            f"{m['coverage']:>10.3f}{m['novelty']:>9.2f}{m['exposure_gini']:>7.3f}{cold_text:>10}{warm_text:>10}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, sort_keys=True, default=float))
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
