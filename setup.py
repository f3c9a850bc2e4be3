"""Builds the optional C fast path (trafficguard/fast/_core.c); metadata is in pyproject.toml.

``optional=True``: when no compiler or Python headers are present the install still
succeeds and trafficguard runs on the pure-Python reference path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "trafficguard.fast._core",
            sources=["trafficguard/fast/_core.c"],
            libraries=["m"],  # log2 (DNS name entropy)
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
