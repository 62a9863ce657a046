"""mlxk: manage, run and serve local language models on MLX."""

from mlxk._version import __version__

JSON_API_SPEC_VERSION = "0.1.7"
