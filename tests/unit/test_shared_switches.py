"""The degradation switches shared by the workers of one server through a mapped file: a switch
set in one process holds in every other at once; in memory, the switches are as before."""

import multiprocessing
import re
from pathlib import Path

import pytest

from paycell.adapters.http.switches import (
    CONSOLE,
    REPORTS,
    RISK_MODE,
    SCHEDULER,
    SWITCHES,
    WEBHOOKS,
    Switches,
)

NORMAL: dict[str, str] = {
    REPORTS: "on",
    CONSOLE: "on",
    WEBHOOKS: "on",
    SCHEDULER: "on",
    RISK_MODE: "full",
}

# Workers are spawned, not forked: a child starts from nothing and attaches to the file.
SPAWN = multiprocessing.get_context("spawn")


def _set_in_another_process(path: str, name: str, value: str) -> None:
    switches = Switches.attach(Path(path))
    switches.set(name, value)
    switches.close()


def _state_in_another_process(path: str) -> dict[str, str]:
    switches = Switches.attach(Path(path))
    state = switches.state()
    switches.close()
    return state


def test_a_switch_set_in_one_worker_holds_in_every_other_at_once(tmp_path: Path) -> None:
    path = tmp_path / "switches"
    here = Switches.create_shared(path)
    also_here = Switches.attach(path)
    with SPAWN.Pool(1) as other_worker:
        other_worker.apply(_set_in_another_process, (str(path), REPORTS, "off"))
        other_worker.apply(_set_in_another_process, (str(path), RISK_MODE, "cheap"))
        # Seen without attaching again: the processes share the mapped bytes.
        for switches in (here, also_here):
            assert not switches.on(REPORTS)
            assert switches.value(REPORTS) == "off"
            assert not switches.on(RISK_MODE)
            assert switches.value(RISK_MODE) == "cheap"
            assert switches.on(WEBHOOKS)
            assert switches.state() == {**NORMAL, REPORTS: "off", RISK_MODE: "cheap"}

        here.set(SCHEDULER, "off")
        here.set(REPORTS, "on")
        seen = other_worker.apply(_state_in_another_process, (str(path),))
    assert seen == {**NORMAL, SCHEDULER: "off", RISK_MODE: "cheap"}
    assert also_here.state() == seen
    here.close()
    also_here.close()


def test_the_file_holds_each_switch_as_the_index_of_its_value(tmp_path: Path) -> None:
    path = tmp_path / "switches"
    switches = Switches.create_shared(path, {CONSOLE: "off", RISK_MODE: "cheap"})
    assert path.read_bytes() == bytes([0, 1, 0, 0, 1])
    switches.set(CONSOLE, "on")
    assert path.read_bytes() == bytes([0, 0, 0, 0, 1])
    switches.close()


def test_create_shared_starts_every_switch_normal_then_initial(tmp_path: Path) -> None:
    path = tmp_path / "switches"
    first = Switches.create_shared(path)
    assert first.state() == NORMAL
    for name, (values, _) in SWITCHES.items():
        first.set(name, values[-1])
    first.close()

    again = Switches.create_shared(path, {WEBHOOKS: "off"})
    assert again.state() == {**NORMAL, WEBHOOKS: "off"}
    assert Switches.attach(path).state() == {**NORMAL, WEBHOOKS: "off"}
    again.close()


def test_create_shared_with_a_bad_initial_raises_and_leaves_the_file_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "switches"
    Switches.create_shared(path, {REPORTS: "off"}).close()
    with pytest.raises(ValueError, match="reports must be one of on, off"):
        Switches.create_shared(path, {SCHEDULER: "off", REPORTS: "maybe"})
    assert Switches.attach(path).state() == {**NORMAL, REPORTS: "off"}
    assert [p.name for p in tmp_path.iterdir()] == ["switches"]


def test_attach_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no switches file"):
        Switches.attach(tmp_path / "switches")


@pytest.mark.parametrize("size", [0, len(SWITCHES) - 1, len(SWITCHES) + 1, 4096])
def test_attach_refuses_a_file_of_the_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "switches"
    path.write_bytes(bytes(size))
    with pytest.raises(ValueError, match=f"not a switches file: {size} bytes, expected 5"):
        Switches.attach(path)


def test_attach_refuses_a_value_no_switch_has(tmp_path: Path) -> None:
    path = tmp_path / "switches"
    path.write_bytes(bytes([0, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match="not a switches file: a value out of range"):
        Switches.attach(path)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("nope", "on", "no switch 'nope' (switches: reports, console, webhooks, scheduler, "),
        (REPORTS, "maybe", "reports must be one of on, off"),
        (RISK_MODE, "on", "risk_mode must be one of full, cheap"),
    ],
)
def test_a_bad_name_or_value_raises_and_changes_nothing_in_the_file(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    path = tmp_path / "switches"
    switches = Switches.create_shared(path, {CONSOLE: "off"})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        switches.set(name, value)
    assert path.read_bytes() == before
    assert switches.state() == {**NORMAL, CONSOLE: "off"}
    switches.close()


def test_closing_one_workers_switches_leaves_the_others_working(tmp_path: Path) -> None:
    path = tmp_path / "switches"
    one = Switches.create_shared(path)
    other = Switches.attach(path)
    one.close()
    other.set(REPORTS, "off")
    assert other.state() == {**NORMAL, REPORTS: "off"}
    assert Switches.attach(path).value(REPORTS) == "off"
    other.close()


def test_in_memory_switches_are_as_before() -> None:
    switches = Switches()
    assert switches.state() == NORMAL
    assert all(switches.on(name) for name in SWITCHES)
    switches.set(RISK_MODE, "cheap")
    assert switches.value(RISK_MODE) == "cheap"
    assert not switches.on(RISK_MODE)
    # Each in-memory Switches is its own: nothing is shared.
    assert Switches().state() == NORMAL
    assert Switches({REPORTS: "off"}).state() == {**NORMAL, REPORTS: "off"}
    with pytest.raises(ValueError, match="no switch 'nope'"):
        Switches({"nope": "on"})
    with pytest.raises(ValueError, match="console must be one of on, off"):
        switches.set(CONSOLE, "cheap")
    with pytest.raises(KeyError):
        switches.value("nope")
    switches.close()  # nothing to release: the switches go on working
    assert switches.state() == {**NORMAL, RISK_MODE: "cheap"}
