"""The documentation's console sessions are run exactly as written and must print what they
show. A doc that drifts from the code fails here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
TIMESTAMP = re.compile(r'("timestamp": )\d+')


def console_sessions(markdown: str) -> list[list[tuple[str, list[str]]]]:
    """Each ```console block as a list of (command, expected stdout lines)."""
    sessions = []
    for block in re.findall(r"```console\n(.*?)```", markdown, flags=re.DOTALL):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        sessions.append(steps)
    return sessions


def normalize(line: str) -> str:
    return TIMESTAMP.sub(r"\1…", line)


@pytest.mark.parametrize("document", ["cli.md"])
def test_console_sessions_print_what_the_docs_show(document: str, tmp_path: Path) -> None:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("PAYCELL_DATABASE_URL", None)
    sessions = console_sessions((DOCS / document).read_text())
    assert sessions, f"{document} has no console sessions"
    for steps in sessions:
        for command, expected in steps:
            completed = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            printed = [normalize(line) for line in completed.stdout.splitlines()]
            assert printed == [normalize(line) for line in expected], (
                f"{command}\nstderr: {completed.stderr}"
            )
