"""Feast feature repository: definitions, store configuration and online-store guards."""
