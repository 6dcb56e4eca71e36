"""The installed finscale version (light: everything, including the data store, records it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("finscale")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
