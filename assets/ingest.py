"""Raw log (external assets) and pandera validation into valid and quarantined rows."""

import warnings
from datetime import UTC, date, datetime

import dagster as dg
from tqdm import tqdm

from assets.partitions import TENANTS, split_event_key
from assets.resources import RecloopResource
from recloop.data.ingest import (
    IngestTotals,
    PartitionReport,
    catalog_counts,
    conservation_violations,
    validate_catalog_partition,
    validate_event_partition,
)
from recloop.data.layout import DataLayout
from recloop.data.validation import RawFileError

# validated_events relies on a single-run backfill policy (a range of days validated in
# one run), a parameter Dagster still labels beta; its notice would open every run's log.
warnings.filterwarnings(
    "ignore", message="Parameter `backfill_policy`.*is currently in beta", category=dg.BetaWarning
)

INGEST_GROUP = "ingest"
ROWS_CONSERVED = "rows_conserved"


def report_metadata(report: PartitionReport) -> dict[str, object]:
    """What the Dagster UI shows (and plots over runs) for one validated partition."""
    return {
        "read": report.read,
        "valid": report.valid,
        "quarantined": report.quarantined,
        "files": ", ".join(report.files) or "(none)",
        "reasons": dg.MetadataValue.json(report.reasons),
    }


def validate_partitions(
    context: dg.AssetExecutionContext,
    layout: DataLayout,
    partitions: dict[str, tuple[str, date]],
) -> IngestTotals:
    """Validate each partition, one materialization each; progress on a bar and in the
    run's log (every tenth of the range), so a long range shows where it is."""
    now, totals = datetime.now(UTC), IngestTotals()
    every = max(1, len(partitions) // 10)
    bar = tqdm(partitions.items(), desc="validate events", unit="partition")
    for done, (key, (tenant, day)) in enumerate(bar, start=1):
        try:
            report = validate_event_partition(layout, tenant, day, now)
        except RawFileError as exc:
            raise dg.Failure(
                description=f"partition {key} not validated: {exc}",
                metadata={"partition": key, "tenant": tenant, "date": day.isoformat()},
            ) from exc
        totals.add(report)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key, partition=key, metadata=report_metadata(report)
            )
        )
        if done % every == 0 or done == len(partitions):
            context.log.info(
                f"{done}/{len(partitions)} partitions: {totals.read:,} rows read, "
                f"{totals.valid:,} valid, {totals.quarantined:,} quarantined"
            )
    return totals


def build_ingest_assets(events_partitions: dg.MultiPartitionsDefinition) -> list:
    """Raw specs, validation assets and their conservation checks for one partitioning."""
    raw_events = dg.AssetSpec(
        "raw_events",
        partitions_def=events_partitions,
        group_name=INGEST_GROUP,
        description=(
            "Append-only raw event log: $RECLOOP_DATA_DIR/raw/events/tenant=<id>/date=<day>/"
            "*.parquet, written by loaders and the serving layer."
        ),
    )
    raw_catalogs = {
        name: dg.AssetSpec(
            f"raw_{name}",
            partitions_def=TENANTS,
            group_name=INGEST_GROUP,
            description=f"{name.title()} catalog snapshots: raw/{name}/tenant=<id>/<YYYY-MM-DD>.parquet.",
        )
        for name in ("users", "items")
    }

    @dg.asset(
        key="validated_events",
        deps=[raw_events],
        partitions_def=events_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=INGEST_GROUP,
        output_required=False,
        check_specs=[
            dg.AssetCheckSpec(
                ROWS_CONSERVED,
                asset="validated_events",
                blocking=True,
                description="valid + quarantined == read, counted from the files on disk.",
            )
        ],
        description=(
            "Raw events checked against recloop.data.schemas.EventSchema. Valid rows go on to dbt; "
            "failing rows go to quarantine/events with the failing checks as `reason`."
        ),
    )
    def validated_events(context: dg.AssetExecutionContext, recloop: RecloopResource):
        layout = recloop.layout()
        partitions = {key: split_event_key(key) for key in context.partition_keys}
        totals = validate_partitions(context, layout, partitions)
        context.log.info(totals.summary())
        broken = conservation_violations(layout, partitions)
        yield dg.AssetCheckResult(
            check_name=ROWS_CONSERVED,
            passed=not broken,
            metadata={
                "partitions": totals.partitions,
                "read": totals.read,
                "valid": totals.valid,
                "quarantined": totals.quarantined,
                "reasons": dg.MetadataValue.json(dict(totals.reasons)),
                "violations": dg.MetadataValue.json(broken[:20]),
            },
        )

    def catalog_asset(name: str):
        @dg.asset(
            key=f"validated_{name}",
            deps=[raw_catalogs[name]],
            partitions_def=TENANTS,
            group_name=INGEST_GROUP,
            check_specs=[
                dg.AssetCheckSpec(ROWS_CONSERVED, asset=f"validated_{name}", blocking=True)
            ],
            description=f"{name.title()} catalog snapshots checked by pandera, with `snapshot_date`.",
        )
        def validated_catalog(context: dg.AssetExecutionContext, recloop: RecloopResource):
            tenant = context.partition_key
            layout = recloop.layout()
            try:
                report = validate_catalog_partition(layout, name, tenant)
            except RawFileError as exc:
                raise dg.Failure(
                    description=f"{name} catalog of tenant {tenant} not validated: {exc}"
                ) from exc
            counts = catalog_counts(layout, name, tenant)
            yield dg.MaterializeResult(
                metadata=report_metadata(report),
                check_results=[
                    dg.AssetCheckResult(
                        check_name=ROWS_CONSERVED,
                        passed=counts.conserved,
                        metadata={"counts": str(counts)},
                    )
                ],
            )

        return validated_catalog

    return [
        raw_events,
        *raw_catalogs.values(),
        validated_events,
        catalog_asset("users"),
        catalog_asset("items"),
    ]
