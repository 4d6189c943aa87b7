"""One place that makes runs repeatable: ``seed_everything`` and the versions we record."""

from __future__ import annotations

import importlib.metadata
import platform
import random

import numpy as np
import torch

from conun.version import __version__


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh CPU generator seeded with ``seed``.

    conun draws every batch order and random subset from an explicit ``torch.Generator`` (the
    returned one, or one derived from it), so that the same seed gives the same numbers on the
    CPU regardless of what other code consumed from the global RNGs. The global seeds are set as
    well because model initialisation uses them.

    Args:
        seed: any integer.

    Returns:
        A ``torch.Generator`` on the CPU seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def versions() -> dict[str, str]:
    """Versions of what produced a result, for checkpoints and results files."""
    found = {"conun": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        found["torchvision"] = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:  # a dependency, but a broken install must
        found["torchvision"] = "unavailable"  # not hide results
    return found
