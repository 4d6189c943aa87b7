"""Errors raised by the data layer.

They subclass the built-in exceptions a caller would already catch (``ValueError`` for a bad
name, ``FileNotFoundError`` for missing files), so generic handlers keep working.
"""

from __future__ import annotations


class UnknownDatasetError(ValueError):
    """A dataset name that is not registered; the message lists the registered names."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing (or unusable) and could not be downloaded.

    The message names the dataset, every directory searched, the directory to fill and the files
    expected there, so a user without network access can put them in place by hand.
    """
