"""The package version (pyproject.toml's), a leaf module: sam2rl_fast and _extension read it."""

__version__ = "0.1.0"
