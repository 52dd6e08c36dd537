"""The one compiled module, paycell.core._fastpath (the ledger's plain-transfer fast path).

Everything else is in pyproject.toml. The module is optional: where it cannot be built (no C
compiler, no Python headers), paycell installs without it and the state machine runs its
pure-Python path, which decides the same results (`paycell.core.state_machine`).
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "src/paycell/core/_fastpath.c"
# Compiled in, so a test can tell a module built from an older source (tests/unit).
SOURCE_SHA256 = hashlib.sha256(Path(__file__).parent.joinpath(SOURCE).read_bytes()).hexdigest()

# gcc and clang's flags; MSVC takes its defaults.
COMPILE_ARGS = [] if sys.platform == "win32" else ["-O2", "-std=c11", "-Wall", "-Wextra"]

setup(
    ext_modules=[
        Extension(
            "paycell.core._fastpath",
            [SOURCE],
            optional=True,
            extra_compile_args=COMPILE_ARGS,
            define_macros=[("PAYCELL_SOURCE_SHA256", f'"{SOURCE_SHA256}"')],
        )
    ]
)
