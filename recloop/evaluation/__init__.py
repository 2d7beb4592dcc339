"""Offline evaluation: ranking metrics, temporal splits and the promotion gates."""
