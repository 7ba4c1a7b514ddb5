"""A quiet screen: known-harmless library warnings filtered by their exact message; the screen
shows this project's lines and every warning, the INFO chatter of the libraries (Lightning,
gensim, faiss) goes to a log file (:func:`setup_logging`).

Only the messages listed here are filtered, each for a stated reason; any other warning of the
same library or category still shows. Standard library only: used by both sides (the walk job
and the trainer).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

# (start of the message, category, why it is harmless here)
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        "`isinstance(treespec, LeafSpec)` is deprecated",
        FutureWarning,
        "torch 2.13 deprecates LeafSpec, which Lightning 2.6 still builds when it flattens a "
        "batch; nothing for a user of Lightning to change",
    ),
    (
        "Your `IterableDataset` has `__len__` defined",
        UserWarning,
        "eges.training.dataset.WalkDataset cuts each rank's batches between the DataLoader workers "
        "itself, without duplicates, so its length holds for any number of workers",
    ),
    (
        "`broadcast_buffers` is deprecated",
        FutureWarning,
        "torch 2.13's DDP; the trainer passes broadcast_buffers=False on purpose: its buffers "
        "(side-information tables, the sampler's alias table) are the same on every rank, and "
        "the replacement, forward_sync_buffers=False, would still send them all from rank 0 at "
        "the start",
    ),
)


def quiet_warnings() -> None:
    """Ignore the warnings of :data:`HARMLESS_WARNINGS` (matched from the start of the message,
    so the same category with any other message still shows)."""
    for message, category, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


# loggers whose INFO lines are the screen's: this project's stages, progress and summaries
SCREEN_LOGGERS = ("eges", "__main__", "jobs")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# loggers of this project whose INFO lines go to the log file only, for now (details_only)
_DETAILS: list[str] = []


class _ScreenFilter(logging.Filter):
    """This project's INFO lines (less those of :func:`details_only`) and everybody's warnings
    and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if any(record.name == d or record.name.startswith(f"{d}.") for d in _DETAILS):
            return False
        return record.name.split(".")[0] in SCREEN_LOGGERS


@contextlib.contextmanager
def details_only(*loggers: str) -> Iterator[None]:
    """Inside the block, the INFO lines of ``loggers`` (and their children) go to the log file
    only; their warnings still show. For a command that runs another's stages many times
    (the evaluation trains and exports every model): its own progress lines are the screen's.
    """
    _DETAILS.extend(loggers)
    try:
        yield
    finally:
        for name in loggers:
            _DETAILS.remove(name)


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> Path | None:
    """The screen shows this project's stages, progress and warnings; with ``log_file``, every
    record of every library at ``level`` and above (Lightning's device and model-summary lines,
    Python warnings) also goes to that file, appended to.

    Replaces the handlers an earlier call installed (a second call moves the file; handlers of
    others, such as pytest's, stay). Returns the log file.
    """
    root = logging.getLogger()
    close_log_file()
    for handler in [h for h in root.handlers if getattr(h, "_eges_screen", False)]:
        root.removeHandler(handler)
    root.setLevel(level)
    screen = logging.StreamHandler(sys.stderr)
    screen.setFormatter(logging.Formatter(LOG_FORMAT))
    screen.addFilter(_ScreenFilter())
    screen._eges_screen = True  # type: ignore[attr-defined]
    root.addHandler(screen)
    logging.captureWarnings(True)  # warnings become records: on the screen and in the file
    quiet_warnings()
    logging.getLogger("py4j").setLevel(logging.WARNING)  # a line per gateway call: not details
    if log_file is None:
        return None
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    detail = logging.FileHandler(path, mode="a", encoding="utf-8")
    detail.setFormatter(logging.Formatter(LOG_FORMAT))
    detail._eges_file = True  # type: ignore[attr-defined]
    root.addHandler(detail)
    logging.getLogger(__name__).info("details of this run are also in %s", path)
    return path


def close_log_file() -> None:
    """Stop writing the file of :func:`setup_logging` (the screen handler stays)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_eges_file", False)]:
        root.removeHandler(handler)
        handler.close()


def current_log_file() -> Path | None:
    """The file :func:`setup_logging` sends details to (None: none)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_eges_file", False):
            return Path(handler.baseFilename)
    return None
