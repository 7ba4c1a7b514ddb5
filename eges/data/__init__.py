"""Torch side, data: the walk shards, the item table and negative sampling. Never imports pyspark."""
