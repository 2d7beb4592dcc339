"""The model registry: versioned model files, the champion and the promotion log, with no serving framework."""
