"""Drivers: the `recloop` CLI, the demos, the simulated loop and experiments, the server launcher.

They import everything (domain, Dagster definitions, the service); nothing imports them.
"""
