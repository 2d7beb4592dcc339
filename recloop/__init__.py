"""recloop: pure domain code (contracts, validation, data loading, layout).

Nothing in this package imports Dagster, Feast or BentoML, so training, serving
and orchestration can all share it.
"""
