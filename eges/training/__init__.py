"""Torch side, training: the walk shards as a stream (``dataset``), the item table (``items``),
negative sampling (``sampling``), the EGES model (``model``) and its skip-gram loss (``loss``),
the Lightning module (``module``) and the export of a finished run (``export``).
``eges/train.py`` is the entry point that ``torchrun`` runs. Never imports pyspark."""
