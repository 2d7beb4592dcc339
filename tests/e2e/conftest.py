"""The e2e tier's fixtures: Dagster instances, the real Redis, and two pipelines paid
for once per session (shared by several modules)."""

# `recloop run` on a generated log: the own-data and browser tests.
from tests.own_log import own_log_run  # noqa: F401
from tests.server_fixtures import instance, redis_project, redis_url  # noqa: F401

# The MovieLens-100K trained system.
from tests.trained_system import trained  # noqa: F401
