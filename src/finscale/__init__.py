"""finscale: do neural scaling laws hold for PatchTST on financial time series?"""

from finscale.version import __version__

__all__ = ["__version__"]
