"""rad3d domain core: pure functions and typed records. Never imports Dagster."""

__version__ = "0.1.0"
