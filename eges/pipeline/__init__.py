"""Spark side of EGES: ingest -> sessions -> graph -> walks -> shards. Never imports torch."""
