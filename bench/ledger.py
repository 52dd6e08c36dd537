"""The ledger benchmark: `python bench/ledger.py ...` is `paycell bench ledger ...`.

Prints one JSON line per backend x batch size x pattern; see `paycell bench ledger --help`.
"""

import sys

from paycell.adapters.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
