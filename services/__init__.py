"""The BentoML service over recloop: API models, a runtime of plain classes, HTTP guards."""
