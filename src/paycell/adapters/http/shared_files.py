"""Files that several server workers map at once (switches, the rate table)."""

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, content: bytes) -> None:
    """Write `content` to `path` by writing it aside and renaming it over the old file: a
    process still mapping the old one keeps it whole (truncating a mapped file would crash it
    with SIGBUS), and nobody sees half a file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
