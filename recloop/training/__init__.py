"""Fitting a candidate model from a point-in-time training set, with its evaluation and gates."""
