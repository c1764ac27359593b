"""The version of robustcars, stated once (``pyproject.toml`` reads it from here)."""

__version__ = "0.2.0"
