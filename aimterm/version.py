"""The version of aimterm (L0: imported by every layer that reports it)."""

__version__ = "0.1.0"
