"""``python -m conun`` (also what torchrun launches)."""

from conun.cli import entry

entry()
