"""BentoML service, model registry and HTTP guards over recloop."""
