"""What every registered model kind shares and the registry reads without loading any
model code: the version prefixes and the error for a file that fails its check. Kept
free of torch, LightGBM and pandas, so `recloop models list` starts in well under a
second."""

# The prefix of each kind's content-addressed versions (`<prefix><hash>`).
TWO_TOWER_PREFIX = "tt-"
POPULARITY_PREFIX = "pop-"
EASE_PREFIX = "ease-"
MULTI_STAGE_PREFIX = "ms-"


class CorruptArtifactError(ValueError):
    """A model file does not match the sha256 recorded for it, or is missing."""
