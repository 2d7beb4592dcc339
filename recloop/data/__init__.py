"""Raw-log contracts, validation, ingest, the data layout, the event log and data-set loaders."""
