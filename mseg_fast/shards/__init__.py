"""Writing and checking WebDataset shards with labels already in the training taxonomy."""
