"""The integration tier's fixtures: Dagster instances and the real Redis."""

from tests.server_fixtures import instance, redis_project, redis_url  # noqa: F401
