"""From sealed batches to upstream: the batcher, the retry table, the sender and the per-sink dispatcher."""
