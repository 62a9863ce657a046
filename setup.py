"""Only the optional C part lives here; everything else is in pyproject.toml.

``mlxk.accel._skinny_gemm`` is a small cblas_sgemm for MLX's CPU backend on Linux (see
src/mlxk/accel/skinny_gemm.c). ``optional=True``: without a C compiler the install still
succeeds and mlxk runs at plain BLAS speed.
"""

import platform

from setuptools import Extension, setup

ext_modules = []
if platform.system() == "Linux":
    ext_modules.append(Extension(
        "mlxk.accel._skinny_gemm",
        sources=["src/mlxk/accel/skinny_gemm.c"],
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
