"""What the interrupt fixture (conftest.py) raises, importable by the tests (a module name of
its own: several conftest.py files exist)."""


class SimulatedCrashError(Exception):
    """Stands in for a crash: raised from inside the optimizer after a given step."""
