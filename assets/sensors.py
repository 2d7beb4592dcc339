"""Tenant discovery: a new `tenant=<id>` directory in the raw log becomes a partition."""

import dagster as dg

from assets.partitions import TENANTS
from assets.resources import RecloopResource


def new_tenants(instance: dg.DagsterInstance, discovered: list[str]) -> list[str]:
    known = set(instance.get_dynamic_partitions(TENANTS.name))
    return [tenant for tenant in discovered if tenant not in known]


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def tenant_discovery_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Add a tenant partition for each raw-log tenant directory not seen before."""
    added = new_tenants(context.instance, recloop.layout().tenants())
    if not added:
        return dg.SkipReason("no new tenant directories")
    return dg.SensorResult(dynamic_partitions_requests=[TENANTS.build_add_request(added)])
