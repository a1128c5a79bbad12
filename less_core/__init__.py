"""LESS: selecting influential data for targeted instruction tuning, as a library."""

__version__ = "0.1.0"
