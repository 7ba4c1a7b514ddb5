"""A quiet screen: known-harmless library warnings filtered by their exact message, and the INFO
chatter of noisy libraries kept off the screen (their warnings and errors still show).

Only the messages listed here are filtered, each for a stated reason; any other warning of the
same library or category still shows. Standard library only: used by both sides (the walk job
and the trainer).
"""

from __future__ import annotations

import logging
import re
import warnings

# (start of the message, category, why it is harmless here)
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    ("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
     "torch 2.13 deprecates LeafSpec, which Lightning 2.6 still builds when it flattens a "
     "batch; nothing for a user of Lightning to change"),
    ("Your `IterableDataset` has `__len__` defined", UserWarning,
     "eges.data.dataset.WalkDataset cuts each rank's batches between the DataLoader workers "
     "itself, without duplicates, so its length holds for any number of workers"),
)

# loggers whose INFO lines clutter the screen: py4j (one line per gateway call and connection,
# walk job), gensim (a "lifecycle event" per save and load: export, DeepWalk baseline), faiss
# (the CPU variants its loader tries)
NOISY_LOGGERS = ("py4j", "gensim", "faiss")


def quiet_warnings() -> None:
    """Ignore the warnings of :data:`HARMLESS_WARNINGS` (matched from the start of the message,
    so the same category with any other message still shows)."""
    for message, category, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


def quiet_loggers(level: int = logging.WARNING) -> None:
    """Raise the level of :data:`NOISY_LOGGERS` to ``level`` (their own WARNING and ERROR lines
    still show)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
