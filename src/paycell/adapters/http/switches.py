"""Degradation switches: non-essential features an operator turns off and on at runtime.

- `reports` (on/off): statements, lists, settlement reports, bills; off -> 503 `degraded`.
- `console` (on/off): /docs, /openapi.json, cashier pages; off -> 503 `degraded`.
- `webhooks` (on/off): off defers delivery: the dispatcher threads skip their passes;
  deliveries keep their schedule and go out when the switch is on again.
- `scheduler` (on/off): off pauses the scheduler job (orders closing, auto-confirm, trades
  finishing, pending transfers expiring); they catch up when it is on again.
- `risk_mode` (full/cheap): recorded and reported only. paycell has no risk engine yet; the
  switch exists so that operators and runbooks have the knob when one arrives.

The state lives in the server process (not the database): it starts with every feature on at
each start, and each server of several has its own.
"""

import threading
from collections.abc import Mapping
from typing import Final

from paycell.adapters.http.auth import Role
from paycell.adapters.http.errors import INVALID_FIELD, ApiError
from paycell.adapters.http.routing import Call, Operation, Reply
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


class Switches:
    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._mutex = threading.Lock()
        self._values = {name: values[0] for name, (values, _) in SWITCHES.items()}
        for name, value in (initial or {}).items():
            self.set(name, value)

    def set(self, name: str, value: str) -> None:
        if name not in SWITCHES:
            raise ValueError(f"no switch {name!r} (switches: {', '.join(SWITCHES)})")
        if value not in SWITCHES[name][0]:
            raise ValueError(f"{name} must be one of {', '.join(SWITCHES[name][0])}")
        with self._mutex:
            self._values[name] = value

    def value(self, name: str) -> str:
        return self._values[name]

    def on(self, name: str) -> bool:
        """Whether a feature runs: on (or, for risk_mode, full)."""
        return self._values[name] == SWITCHES[name][0][0]

    def state(self) -> dict[str, str]:
        with self._mutex:
            return dict(self._values)


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
