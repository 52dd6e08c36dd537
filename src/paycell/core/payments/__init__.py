"""The payment platform's pure domain: the business Alipay runs on its books.

Every flow (top-up, withdrawal, direct and escrow payment, refund, payout) is a pure function
from the records it reads and the time to a `Decision`: the records it changes and the ledger
transfers that move the money. The service layer prefetches the records, calls the flow, runs
the transfers through the ledger state machine in the same transaction, and commits once; if
the ledger rejects a transfer (a wallet without the funds), nothing of the decision is kept.
"""
