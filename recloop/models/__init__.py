"""What is trained and served: the two-tower, popularity and baseline recommenders, their artifacts and the retrieval index."""
