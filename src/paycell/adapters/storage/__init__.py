"""Storage backends behind one port (`paycell.service.ports.LedgerStore`)."""

from paycell.adapters.storage.factory import open_store

__all__ = ["open_store"]
