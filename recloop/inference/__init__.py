"""The one inference path for offline evaluation, batch lists and the service: retrievers and exploration policies."""
