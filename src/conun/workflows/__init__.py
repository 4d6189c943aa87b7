"""Workflows: what the CLI and the API run, end to end, on top of the methods and the engine.

Training an original, unlearning a checkpoint, evaluating and auditing one, the demo, and the
U-LiRA shadow jobs. Each validates everything it can before any work and writes its outputs
atomically at the end.
"""
