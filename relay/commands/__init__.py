"""The operator commands besides `serve`: check-config, map, dead-letter, status."""
