"""Dagster code location for recloop: thin assets over `recloop`, dbt and Feast."""
