"""Training: text embeddings and the champion's model chain.

The champion's chain (assets.model_chain) is `training_set -> model_candidate ->
champion_model`, partitioned by tenant (a tenant's model never reads another's labels,
and each tenant has its own champion): `model_candidate` trains, evaluates and registers a candidate of the
algorithm `RECLOOP_CHAMPION_ALGORITHM` names (the multi-stage recommender by default, or
EASE, or the two-tower), and five blocking asset checks hold it to the promotion gates
(recloop.evaluation.gates), so `champion_model`, which promotes it, only runs when
every gate passed, whatever kind the current champion is. A failed gate leaves the
previous champion serving.
"""

from dataclasses import replace

import dagster as dg
import pandas as pd

from assets.dbt import WAREHOUSE_POOL
from assets.model_chain import (
    PROMOTION_CHECKS,
    ChainKeys,
    ModelChain,
    Release,
    model_chain_assets,
)
from assets.partitions import TENANTS
from assets.resources import RecloopResource
from feature_repo.training import FEATURE_SERVICE
from recloop.data.validated_log import catalog_texts
from recloop.evaluation.gates import GateConfig
from recloop.features.text_embeddings import ENCODER_ID, embed_items
from recloop.inference.policies import Greedy
from recloop.settings import CHAMPION_ALGORITHMS
from recloop.training.chain import GatePlan, ModelRecipe

TRAINING_GROUP = "training"
TRAINING_JOB = "train_and_promote"


@dg.asset(
    key="item_text_embeddings",
    deps=["int_items"],
    group_name=TRAINING_GROUP,
    pool=WAREHOUSE_POOL,
    description="MiniLM embedding of each item's title and genres, cached by text hash.",
)
def item_text_embeddings(
    context: dg.AssetExecutionContext, recloop: RecloopResource
) -> pd.DataFrame:
    layout = recloop.layout()
    items = catalog_texts(layout)
    run = embed_items(items, layout.item_text_embeddings_cache)
    context.add_output_metadata(
        {"encoder": ENCODER_ID, "items": len(items), "computed": run.computed, "reused": run.reused}
    )
    return run.embeddings


def champion_chain(algorithm: str) -> ModelChain:
    """The champion's chain for one algorithm; only the two-tower reads Feast features."""
    if algorithm not in CHAMPION_ALGORITHMS:
        raise ValueError(
            f"the champion chain trains one of {CHAMPION_ALGORITHMS}, not {algorithm!r}"
        )
    recipe = ModelRecipe(algorithm)
    if recipe.reads_features:
        recipe = replace(recipe, feature_service=FEATURE_SERVICE)
    return ModelChain(
        keys=ChainKeys(
            training_set=dg.AssetKey("training_set"),
            model=dg.AssetKey("model_candidate"),
            release=dg.AssetKey("champion_model"),
        ),
        group=TRAINING_GROUP,
        label=f"{algorithm} candidate",
        release=Release.PROMOTE,
        recipe=recipe,
        plan=GatePlan(GateConfig(), against_champion=True, policy=Greedy()),
        checks=PROMOTION_CHECKS,
        registry_labels={"feature_service": FEATURE_SERVICE} if recipe.reads_features else {},
        run_config=True,
        release_description="The tenant's champion in the registry: the candidate, once every "
        "blocking gate passed and the online store holds the features it serves with.",
        partitions=TENANTS,
    )


def champion_chain_assets(algorithm: str) -> list[dg.AssetsDefinition]:
    """training_set, model_candidate and champion_model for `algorithm`."""
    return model_chain_assets(champion_chain(algorithm))
