"""LESS: selecting influential data for targeted instruction tuning, as a library."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("less-search")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
