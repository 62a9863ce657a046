"""The one place mlxk's version is written; pyproject.toml's version must equal it (a test checks).

A plain constant, so that ``mlxk --version`` needs no importlib.metadata (40 ms at start).
"""

__version__ = "2.1.0"
