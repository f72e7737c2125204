"""Where a number came from: the code's commit and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def git_commit(folder: str | os.PathLike = ".") -> str:
    """Short commit of the checkout that holds ``folder``; ``unknown`` outside one (an installed wheel)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(folder), capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    import recbole
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), RecBole {recbole.__version__}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")
