"""An independent reference model of the ledger, written from the TigerBeetle 0.16 spec."""
