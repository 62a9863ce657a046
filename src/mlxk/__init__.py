"""mlxk: manage, run and serve local language models on MLX."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("mlxk")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

JSON_API_SPEC_VERSION = "0.1.7"
