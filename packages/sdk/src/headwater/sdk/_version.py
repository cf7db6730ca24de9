"""The SDK's version and the `lib` string it sends."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headwater-sdk")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

LIB = f"headwater-python/{__version__}"
