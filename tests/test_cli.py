"""One command-line face: ``eges <command>`` (the installed console script) and
``python -m eges <command>`` list and run every command; user errors are one line, exit 2."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eges.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eges", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command():
    proc = run("--help")
    assert proc.returncode == 0
    listed = [
        line.split()[0] for line in proc.stdout.split("commands:")[1].splitlines() if line.strip()
    ]
    assert listed == list(COMMANDS)
    assert listed == ["walks", "train", "embed", "neighbors", "evaluate", "tune", "synth", "config"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_its_own_help(command):
    proc = run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: eges {command} "), proc.stdout[:200]
    # commands, not the modules behind them
    assert not re.search(r"\beges\.[a-z_]+", proc.stdout), proc.stdout


def test_unknown_command_and_no_command_are_one_line_errors():
    proc = run("embedd")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown command 'embedd' (commands: {', '.join(COMMANDS)}; eges --help)"
    ]
    nothing = run()
    assert nothing.returncode == 2 and "commands:" in nothing.stderr


def test_console_script_is_installed_and_reports_user_errors():
    script = Path(sys.executable).parent / "eges"
    script = script if script.exists() else shutil.which("eges")
    assert script, "the eges console script is not installed (pip install -e .)"
    proc = subprocess.run(
        [str(script), "embed", "--run", "/nonexistent", "--items", "x.csv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
