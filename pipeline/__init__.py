"""fsar data pipeline: synthetic benchmark, decoding, sharding and embedding stages."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fsar")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
