"""Degradation switches: non-essential features an operator turns off and on at runtime.

- `reports` (on/off): statements, lists, settlement reports, bills; off -> 503 `degraded`.
- `console` (on/off): /docs, /openapi.json, cashier pages; off -> 503 `degraded`.
- `webhooks` (on/off): off defers delivery: the dispatcher threads skip their passes;
  deliveries keep their schedule and go out when the switch is on again.
- `scheduler` (on/off): off pauses the scheduler job (orders closing, auto-confirm, trades
  finishing, pending transfers expiring); they catch up when it is on again.
- `risk_mode` (full/cheap): recorded and reported only. paycell has no risk engine yet; the
  switch exists so that operators and runbooks have the knob when one arrives.

The state lives in the server, not the database: it starts with every feature on at each
start. A server of one process keeps it in memory. With several workers of one
`paycell serve`, the workers share it through a small file in the server's run directory,
mapped into each of them (`create_shared`, `attach`): a switch set through any worker holds in
all of them at once. Separate servers each still have their own.
"""

import mmap
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from paycell.adapters.http.auth import Role
from paycell.adapters.http.errors import INVALID_FIELD, ApiError
from paycell.adapters.http.routing import Call, Operation, Reply
from paycell.adapters.http.shared_files import replace_file
from paycell.adapters.http.validation import Field

REPORTS: Final = "reports"
CONSOLE: Final = "console"
WEBHOOKS: Final = "webhooks"
SCHEDULER: Final = "scheduler"
RISK_MODE: Final = "risk_mode"

# Each switch, its allowed values (the first is the normal state) and what it does.
SWITCHES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    REPORTS: (("on", "off"), "statements, lists, settlement reports and bills (off: 503)"),
    CONSOLE: (("on", "off"), "/docs, /openapi.json and cashier pages (off: 503)"),
    WEBHOOKS: (("on", "off"), "webhook and notify_url delivery (off: deferred, kept due)"),
    SCHEDULER: (("on", "off"), "the background scheduler (off: paused)"),
    RISK_MODE: (("full", "cheap"), "risk rules' mode (recorded only: no risk engine yet)"),
}

# The state is one byte per switch, in SWITCHES order: the index of its value among the
# switch's choices, so 0 is the normal state. The shared file holds exactly these bytes.
_POSITION: Final = {name: position for position, name in enumerate(SWITCHES)}
_STATE_BYTES: Final = len(SWITCHES)


def _in_range(state: bytes) -> bool:
    """Whether each byte is the index of one of its switch's values."""
    return all(i < len(values) for i, (values, _) in zip(state, SWITCHES.values(), strict=True))


class Switches:
    """The switches' state: in memory, or in a file shared by the workers of one server.

    No lock, in either mode: a `set` is a single one-byte store, which is atomic (a reader
    sees the old value or the new, never a mix), and the switches are independent of each
    other, so there is no invariant across bytes to protect. A lock could not cover the other
    workers anyway, and reads, which come with every request, stay a byte read: no system
    call, no lock.
    """

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._cells: bytearray | mmap.mmap = bytearray(_STATE_BYTES)
        for name, value in (initial or {}).items():
            self.set(name, value)

    @classmethod
    def create_shared(cls, path: Path, initial: Mapping[str, str] | None = None) -> "Switches":
        """Create (or overwrite) the shared file with every switch normal, then `initial`."""
        state = bytes(cls(initial)._cells)  # checks `initial` before the file is touched
        replace_file(path, state)
        return cls.attach(path)

    @classmethod
    def attach(cls, path: Path) -> "Switches":
        """The switches of a file made by `create_shared` (in another process, typically)."""
        try:
            file = path.open("r+b")
        except FileNotFoundError:
            raise ValueError(f"no switches file {path}") from None
        with file:
            size = os.fstat(file.fileno()).st_size
            if size != _STATE_BYTES:
                raise ValueError(
                    f"{path} is not a switches file: {size} bytes, expected {_STATE_BYTES}"
                )
            # The mapping keeps its own reference to the file: it outlives `file`.
            cells = mmap.mmap(file.fileno(), _STATE_BYTES, flags=mmap.MAP_SHARED)
        if not _in_range(bytes(cells)):
            cells.close()
            raise ValueError(f"{path} is not a switches file: a value out of range")
        switches = cls()
        switches._cells = cells
        return switches

    def close(self) -> None:
        """Unmap the shared file (nothing to do in memory); the switches are unusable after."""
        if isinstance(self._cells, mmap.mmap):
            self._cells.close()

    def set(self, name: str, value: str) -> None:
        if name not in SWITCHES:
            raise ValueError(f"no switch {name!r} (switches: {', '.join(SWITCHES)})")
        if value not in SWITCHES[name][0]:
            raise ValueError(f"{name} must be one of {', '.join(SWITCHES[name][0])}")
        self._cells[_POSITION[name]] = SWITCHES[name][0].index(value)

    def value(self, name: str) -> str:
        return SWITCHES[name][0][self._cells[_POSITION[name]]]

    def on(self, name: str) -> bool:
        """Whether a feature runs: on (or, for risk_mode, full)."""
        return self._cells[_POSITION[name]] == 0

    def state(self) -> dict[str, str]:
        cells = bytes(self._cells)
        return {name: values[cells[i]] for i, (name, (values, _)) in enumerate(SWITCHES.items())}


def _payload(switches: Switches) -> dict[str, object]:
    return {"object": "switches", **switches.state()}


def switch_operations(switches: Switches) -> tuple[Operation, ...]:
    def get_switches(_call: Call) -> Reply:
        return Reply(200, _payload(switches))

    def set_switches(call: Call) -> Reply:
        try:
            for name, value in call.body.items():
                assert isinstance(value, str)
                switches.set(name, value)
        except ValueError as problem:
            raise ApiError(INVALID_FIELD, str(problem)) from None
        return Reply(200, _payload(switches))

    admin = frozenset({Role.ADMIN})
    return (
        Operation(
            "GET",
            "/v1/admin/switches",
            admin,
            get_switches,
            "The degradation switches and their state",
            "Switches",
            tags=("admin",),
        ),
        Operation(
            "PUT",
            "/v1/admin/switches",
            admin,
            set_switches,
            "Turn degradation switches on or off (only the switches named change)",
            "Switches",
            body=tuple(
                Field(name, "string", text, False, 8, choices=values, example=values[-1])
                for name, (values, text) in SWITCHES.items()
            ),
            tags=("admin",),
        ),
    )
