"""The durable queue: every diskcache call lives here, behind the queue's methods."""
