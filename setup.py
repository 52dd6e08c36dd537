"""The one compiled module, paycell.core._fastpath (the ledger's plain-transfer fast path).

Everything else is in pyproject.toml. The module is optional: where it cannot be built (no C
compiler, no Python headers), paycell installs without it and the state machine runs its
pure-Python path, which decides the same results (`paycell.core.state_machine`).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "paycell.core._fastpath",
            ["src/paycell/core/_fastpath.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
        )
    ]
)
