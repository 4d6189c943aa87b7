"""Devices and torch.distributed, in one place: where tensors live and how ranks share work.

The lowest layer beside ``config`` and ``io``: it imports nothing else from conun, so that the
data, models, evaluation and the engine can all use it.
"""
