"""The pure stages, bytes -> entries: compression, decode, timestamps, the upstream schema, the pipeline."""
