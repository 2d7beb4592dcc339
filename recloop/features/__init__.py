"""Feature definitions shared by training and serving: vectors, stream features, catalog and text features, parity, point-in-time training sets."""
