"""finscale: do neural scaling laws hold for PatchTST on financial time series?

Importing the package is cheap (no torch, pandas or importlib.metadata), so that
``finscale --help`` starts fast; ``__version__`` is looked up on first use.
"""


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("finscale")
        except PackageNotFoundError:  # running from a source tree without installation
            return "0.0.0+local"
    raise AttributeError(f"module 'finscale' has no attribute {name!r}")
