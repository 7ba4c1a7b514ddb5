"""The project's command line: ``eges <command> [options]`` (the console script that
``pip install`` puts on the PATH), the same as ``python -m eges <command> [options]``.

Every command is the ``main(argv)`` of one module, in the order of the stages::

    eges walks      eges.pipeline.cli          the Spark walk job (also spark-submit jobs/walks.py)
    eges train      eges.train                 training (--nproc-per-node N or torchrun: DDP)
    eges embed      eges.serving.embed         cold start: vectors and neighbours of new items
    eges neighbors  eges.serving.neighbors     the item-to-item neighbour table of a run
    eges evaluate   eges.evaluation.evaluate   EGES against simpler models, with a report
    eges tune       eges.evaluation.tune       the same tuning grid for every model, on validation
    eges synth      eges.synth                 a generated log with planted communities
    eges config     eges.config_reference      the configuration reference

The commands share :func:`parser` (program name and description), :func:`fail` (a user error is
one ``error: …`` line on stderr and exit status 2, never a stack trace) and the logging set-up of
:func:`eges.quiet.setup_logging`. Nothing here imports pyspark or torch: a command's module is
imported when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from eges import __version__

# command -> (module whose main(argv) runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "walks": (
        "eges.pipeline.cli",
        "behaviour logs -> item graph -> weighted random walks "
        "(Spark; the same as spark-submit jobs/walks.py)",
    ),
    "train": (
        "eges.train",
        "train EGES on a walk output (--nproc-per-node N: N processes, or torchrun eges/train.py)",
    ),
    "embed": (
        "eges.serving.embed",
        "vectors and neighbours of new items from their side information alone",
    ),
    "neighbors": ("eges.serving.neighbors", "the item-to-item neighbour table of a run"),
    "evaluate": (
        "eges.evaluation.evaluate",
        "EGES, GES, BGE and baselines on held-out splits, with a report",
    ),
    "tune": (
        "eges.evaluation.tune",
        "the same grid of training settings for every model, chosen on a validation hold-out",
    ),
    "synth": ("eges.synth", "a generated MovieLens-layout log with planted communities"),
    "config": ("eges.config_reference", "every configuration key: type, default, checks, help"),
}


def parser(command: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``eges <command>``, described by the first paragraph of ``doc``."""
    return argparse.ArgumentParser(
        prog=f"eges {command}",
        description=(doc or "").split("\n\n")[0].strip(),
    )


def fail(message: object) -> int:
    """Report a user error as one line on stderr; returns the exit status (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: eges <command> [options]   (eges <command> --help: its options)",
        "",
        "EGES: graph embedding with side information on Spark and PyTorch.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"eges {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return fail(f"unknown command {name!r} (commands: {', '.join(COMMANDS)}; eges --help)")
    return importlib.import_module(COMMANDS[name][0]).main(rest)
