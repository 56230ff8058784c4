"""relay: a durable HTTP relay from log shippers to the Profound custom-log API."""

__version__ = "0.1.0"
