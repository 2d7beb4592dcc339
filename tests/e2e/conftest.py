"""The e2e tier's fixtures: Dagster instances and the real Redis."""

from tests.server_fixtures import instance, redis_project, redis_url  # noqa: F401

# The MovieLens-100K trained system, a session fixture shared by several modules.
from tests.trained_system import trained  # noqa: F401
