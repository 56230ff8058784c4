"""`relay bench`: end-to-end throughput of the real processes."""
