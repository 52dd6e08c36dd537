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
RESULT = re.compile(r'"result": "([a-z_]+)"')
# docs/cli.md's exit codes: 0 success, 1 when an event was rejected (any result but these),
# 2 for bad input, with the reason on standard error.
ACCEPTED_RESULTS = {"ok", "exists"}
# The bad input the docs show (a fragment of the command) and the standard error they state
# for it; "..." stands for the rest of the line.
BAD_INPUT = {
    '"amount": -5': "paycell: error: invalid_field: event 0: amount: must not be negative, got -5",
    '"colour": "blue"': "paycell: error: unknown_field: ...",
}


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


def expected_exit_and_stderr(command: str, expected: list[str]) -> tuple[int, str | None]:
    """The exit code the docs state for a command, and its standard error when they state it."""
    bad = [message for fragment, message in BAD_INPUT.items() if fragment in command]
    if bad:
        return 2, bad[0]
    rejected = set(RESULT.findall("\n".join(expected))) - ACCEPTED_RESULTS
    return (1 if rejected else 0), None


def stderr_matches(stderr: str, stated: str) -> bool:
    if stated.endswith("..."):
        return stderr.startswith(stated.removesuffix("..."))
    return stderr.rstrip("\n") == stated


@pytest.mark.parametrize("document", ["cli.md"])
def test_console_sessions_print_what_the_docs_show(document: str, tmp_path: Path) -> None:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("PAYCELL_DATABASE_URL", None)
    markdown = (DOCS / document).read_text()
    sessions = console_sessions(markdown)
    assert sessions, f"{document} has no console sessions"
    for message in BAD_INPUT.values():
        assert f"`{message}`" in markdown  # the test checks what the doc says, word for word
    bad_input_run = []
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
            exit_code, stated_stderr = expected_exit_and_stderr(command, expected)
            assert completed.returncode == exit_code, f"{command}\nstderr: {completed.stderr}"
            if stated_stderr is None:
                assert "error" not in completed.stderr.lower(), command
                assert "Traceback" not in completed.stderr, command
            else:
                assert stderr_matches(completed.stderr, stated_stderr), completed.stderr
                bad_input_run.append(stated_stderr)
    assert sorted(bad_input_run) == sorted(BAD_INPUT.values())  # every one was in a session
