"""The `paycell` command line: ledger commands, verify, bench and demo.

`main.py` parses arguments and maps outcomes to exit codes at the edge; each command lives in
its own module so the library surface (`paycell.Ledger`) stays the only thing they share.

Exit codes: 0 success; 1 a business outcome the caller should look at (a rejected event, a
failed verification, an id not found); 2 bad input (malformed JSON, an unknown field or flag
name, a negative amount: nothing was changed); 3 the database or another resource could not be
used.
"""
