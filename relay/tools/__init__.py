"""The developer's workshop: the upstream stand-in, the benchmark and its load generator. Imports the core, never the reverse."""
