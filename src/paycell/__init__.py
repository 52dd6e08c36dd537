"""paycell: a self-hosted payment platform core with a double-entry ledger that always balances.

The public surface is exactly what `__all__` lists; tests pin it.
"""

import os

from paycell.core import compiled
from paycell.core.currency import (
    Currency,
    InvalidAmountError,
    UnknownCurrencyError,
    currency_for_code,
    currency_for_ledger,
    format_amount,
    parse_amount,
)
from paycell.core.errors import (
    BatchEmptyError,
    BatchTooLargeError,
    InvalidFieldError,
    InvalidInputError,
    PaycellError,
)
from paycell.core.limits import AMOUNT_MAX, BATCH_EVENTS_MAX, QUERY_LIMIT_MAX
from paycell.core.results import CreateAccountResult, CreateTransferResult
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    AccountFlags,
    QueryFilter,
    QueryFilterFlags,
    Transfer,
    TransferFlags,
)
from paycell.ledger import Ledger
from paycell.platform import Platform
from paycell.service.verify import VerifyReport

__version__ = "0.1.0"

__all__ = [
    "AMOUNT_MAX",
    "BATCH_EVENTS_MAX",
    "QUERY_LIMIT_MAX",
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFilterFlags",
    "AccountFlags",
    "BatchEmptyError",
    "BatchTooLargeError",
    "CreateAccountResult",
    "CreateTransferResult",
    "Currency",
    "InvalidAmountError",
    "InvalidFieldError",
    "InvalidInputError",
    "Ledger",
    "PaycellError",
    "Platform",
    "QueryFilter",
    "QueryFilterFlags",
    "Transfer",
    "TransferFlags",
    "UnknownCurrencyError",
    "VerifyReport",
    "__version__",
    "currency_for_code",
    "currency_for_ledger",
    "format_amount",
    "parse_amount",
]

# An operator's way to rule the compiled fast path out (docs/ledger.md): the core then
# runs on its pure-Python code alone.
if os.environ.get("PAYCELL_PURE_PYTHON") == "1":
    compiled.switch(False)
