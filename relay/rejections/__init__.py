"""Rejected records: the recent ones in memory (recent.py), their redaction (redact.py), and
replaying the stored ones through the current mapping (replay.py). The disk store is
relay/store/rejected.py."""
