"""One definition of "missing" for values that may be scalars, NaN, NA or sequences."""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_missing(value: object) -> bool:
    """None, NaN, NaT and pd.NA are missing; a sequence (even empty) is a value."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, set, dict, np.ndarray, pd.Series)):
        return False
    return bool(pd.isna(value))
