"""Torch side, serving a finished run: cold-start vectors for new items from their side
information (``embed``) and the item-to-item neighbour table (``neighbors``)."""
