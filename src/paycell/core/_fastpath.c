/*
 * paycell.core._fastpath: the ledger state machine's plain-transfer fast path, compiled.
 *
 * The pure-Python state machine (state_machine.py) is the definition of every rule. This
 * module repeats, in C, only the part of it that a large batch spends its time in: a transfer
 * with no flags between two open accounts of its ledger, sure to succeed. It applies such
 * transfers one after another and stops at the first event it is not sure of, returning that
 * event's index; the Python loop then decides that event with all of TigerBeetle's rules, in
 * their precedence, and calls back in for the rest. Anything unusual stops it: a flag, a
 * field outside 64 bits, an id seen before, a missing or closed account, a balance limit, an
 * account that keeps history. It changes nothing for an event it stops at but the working
 * balance rows it creates, which the Python path would create at the same point.
 *
 * Two helpers for the journal and the batch's outcome follow: the journal's transfer lines
 * (the text the batch hash covers) and the accounts a batch updated. Both return None when
 * a value is not a plain unsigned 64-bit int, and the caller falls back to Python.
 *
 * Property tests run every batch through this module and through the pure-Python path and
 * require the same results, balances, transfers and hashes.
 *
 * No I/O, no clock, no global state but constants: like the rest of paycell.core, a pure
 * function of its arguments (which it updates in place, as the Python loop does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Field positions, as in paycell.core.types (state_machine.py asserts the same layout). */
enum {
    T_ID = 0, T_DEBIT = 1, T_CREDIT = 2, T_AMOUNT = 3, T_PENDING_ID = 4,
    T_TIMEOUT = 8, T_LEDGER = 9, T_CODE = 10, T_FLAGS = 11, T_TIMESTAMP = 12, T_FIELDS = 13,
};
enum {
    A_DP = 1, A_DPO = 2, A_CP = 3, A_CPO = 4, A_LEDGER = 9, A_FLAGS = 11, A_FIELDS = 13,
};
/* Account flag bits, as in paycell.core.types.AccountFlags (checked by `constants`). */
enum {
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1,
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2,
    HISTORY = 1 << 3,
    CLOSED = 1 << 5,
};

/* The value of an int that fits in 64 unsigned bits; 0 (no error set) when it does not. */
static int
as_u64(PyObject *value, uint64_t *out)
{
    if (!PyLong_CheckExact(value)) {
        return 0;
    }
    uint64_t result = PyLong_AsUnsignedLongLong(value);
    if (result == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = result;
    return 1;
}

/*
 * An exact int that is a valid id: 0 < value < 2**128 - 1 (TigerBeetle's id_must_not_be_*).
 * `id_max` is 2**128 - 1, compared with only when the value has all 128 bits.
 * -1 with an exception set on an error.
 */
static int
is_id(PyObject *value, PyObject *id_max)
{
    if (!PyLong_CheckExact(value) || _PyLong_Sign(value) <= 0) {
        return 0;
    }
    size_t bits = _PyLong_NumBits(value);
    if (bits == (size_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (bits != 128) {
        return bits < 128;
    }
    return PyObject_RichCompareBool(value, id_max, Py_NE);  /* 2**128 - 1 is reserved */
}

/* An exact int within `bits` unsigned bits. */
static int
fits(PyObject *value, unsigned bits)
{
    if (!PyLong_CheckExact(value) || _PyLong_Sign(value) < 0) {
        return 0;
    }
    if (bits <= 64) {
        uint64_t unsigned_value;
        return as_u64(value, &unsigned_value) &&
               (bits == 64 || unsigned_value >> bits == 0);
    }
    size_t needed = _PyLong_NumBits(value);
    if (needed == (size_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return needed <= bits;
}

/* The working balance row of an account: found in `balances`, else made from the account. */
static PyObject *
working_row(PyObject *balances, PyObject *account_id, PyObject *account)
{
    PyObject *row = PyDict_GetItemWithError(balances, account_id);
    if (row != NULL || PyErr_Occurred()) {
        return row;  /* borrowed */
    }
    row = PySequence_List(account);
    if (row == NULL) {
        return NULL;
    }
    int failed = PyDict_SetItem(balances, account_id, row);
    Py_DECREF(row);  /* the dict holds it */
    return failed ? NULL : row;
}

/* A tuple subtype (a NamedTuple class) instance of `size` items, to be filled by the caller. */
static PyObject *
new_record(PyTypeObject *type, Py_ssize_t size)
{
    return type->tp_alloc(type, size);
}

/*
 * Take a filled record of plain ints off the cyclic garbage collector's lists: it holds only
 * ints (and its class, which the type keeps alive), so it can never be part of a cycle. CPython
 * untracks a plain tuple of atomic values at its first collection, but not a NamedTuple, so
 * every record the ledger makes would stay on the collector's lists. Untracked here, the
 * collection that the ledger defers to a batch's end does not walk the some 16,000 records of
 * a large batch (about 4 ms).
 */
static void
untrack_if_plain_ints(PyObject *record)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(record); i++) {
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(record, i))) {
            return;
        }
    }
    PyObject_GC_UnTrack(record);
}

/* A batch's working state, as the Python loop holds it (see apply_plain). */
typedef struct {
    PyObject *events;         /* list of Transfer */
    uint64_t timestamp_base;  /* the timestamp of events[0] */
    PyObject *accounts;       /* dict: account id -> Account, as prefetched */
    PyObject *balances;       /* dict: account id -> working row (list) */
    PyObject *transfers;      /* dict: transfer id -> Transfer, committed before */
    PyObject *failed;         /* dict: transfer id -> result, failed before */
    PyObject *created;        /* list of Transfer, created by this batch */
    PyObject *created_by_id;  /* dict: transfer id -> Transfer, created by this batch */
    PyTypeObject *transfer_type;
    PyObject *id_max;         /* 2**128 - 1 */
} Batch;

/* 1 when all three are valid ids, 0 when one is not, -1 on an error. */
static int
are_ids(PyObject *a, PyObject *b, PyObject *c, PyObject *id_max)
{
    int valid = is_id(a, id_max);
    if (valid == 1) {
        valid = is_id(b, id_max);
    }
    if (valid == 1) {
        valid = is_id(c, id_max);
    }
    return valid;
}

/* Apply events from `index` while each is sure to succeed; the index of the first that is
 * not, or -1 with an exception set. */
static Py_ssize_t
apply_run(Batch *batch, Py_ssize_t index)
{
    Py_ssize_t count = PyList_GET_SIZE(batch->events);
    for (; index < count; index++) {
        PyObject *event = PyList_GET_ITEM(batch->events, index);
        if (Py_TYPE(event) != batch->transfer_type || PyTuple_GET_SIZE(event) != T_FIELDS) {
            return index;
        }
        PyObject *id_object = PyTuple_GET_ITEM(event, T_ID);
        PyObject *debit_object = PyTuple_GET_ITEM(event, T_DEBIT);
        PyObject *credit_object = PyTuple_GET_ITEM(event, T_CREDIT);
        uint64_t flags, event_timestamp, amount, pending_id, timeout, ledger, code;
        if (!as_u64(PyTuple_GET_ITEM(event, T_FLAGS), &flags) || flags != 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_TIMESTAMP), &event_timestamp) ||
            event_timestamp != 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_PENDING_ID), &pending_id) || pending_id != 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_TIMEOUT), &timeout) || timeout != 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_AMOUNT), &amount) || amount == 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_LEDGER), &ledger) || ledger == 0 ||
            !as_u64(PyTuple_GET_ITEM(event, T_CODE), &code) || code == 0) {
            return index;
        }
        int valid = are_ids(id_object, debit_object, credit_object, batch->id_max);
        if (valid != 1) {
            return valid < 0 ? -1 : index;
        }
        int same_account = PyObject_RichCompareBool(debit_object, credit_object, Py_EQ);
        if (same_account != 0) {
            return same_account < 0 ? -1 : index;
        }
        int seen = PyDict_Contains(batch->created_by_id, id_object);
        if (seen == 0) {
            seen = PyDict_Contains(batch->transfers, id_object);
        }
        if (seen == 0) {
            seen = PyDict_Contains(batch->failed, id_object);
        }
        if (seen != 0) {
            return seen < 0 ? -1 : index;
        }
        PyObject *debit_account = PyDict_GetItemWithError(batch->accounts, debit_object);
        if (debit_account == NULL) {
            return PyErr_Occurred() ? -1 : index;
        }
        PyObject *credit_account = PyDict_GetItemWithError(batch->accounts, credit_object);
        if (credit_account == NULL) {
            return PyErr_Occurred() ? -1 : index;
        }
        uint64_t debit_ledger, credit_ledger;
        if (!PyTuple_Check(debit_account) || PyTuple_GET_SIZE(debit_account) != A_FIELDS ||
            !PyTuple_Check(credit_account) || PyTuple_GET_SIZE(credit_account) != A_FIELDS ||
            !as_u64(PyTuple_GET_ITEM(debit_account, A_LEDGER), &debit_ledger) ||
            !as_u64(PyTuple_GET_ITEM(credit_account, A_LEDGER), &credit_ledger) ||
            debit_ledger != ledger || credit_ledger != ledger) {
            return index;
        }
        /* From here the Python fast path would make the working rows: so do we. */
        PyObject *debit_row = working_row(batch->balances, debit_object, debit_account);
        if (debit_row == NULL) {
            return -1;
        }
        PyObject *credit_row = working_row(batch->balances, credit_object, credit_account);
        if (credit_row == NULL) {
            return -1;
        }
        if (!PyList_CheckExact(debit_row) || PyList_GET_SIZE(debit_row) != A_FIELDS ||
            !PyList_CheckExact(credit_row) || PyList_GET_SIZE(credit_row) != A_FIELDS) {
            return index;
        }
        uint64_t debit_flags, credit_flags, debits_pending, debits_posted_before;
        uint64_t debit_credits_posted, credits_pending, credits_posted_before;
        uint64_t credit_debits_posted;
        if (!as_u64(PyList_GET_ITEM(debit_row, A_FLAGS), &debit_flags) ||
            !as_u64(PyList_GET_ITEM(credit_row, A_FLAGS), &credit_flags) ||
            ((debit_flags | credit_flags) & (CLOSED | HISTORY)) ||
            !as_u64(PyList_GET_ITEM(debit_row, A_DP), &debits_pending) ||
            !as_u64(PyList_GET_ITEM(debit_row, A_DPO), &debits_posted_before) ||
            !as_u64(PyList_GET_ITEM(debit_row, A_CPO), &debit_credits_posted) ||
            !as_u64(PyList_GET_ITEM(credit_row, A_CP), &credits_pending) ||
            !as_u64(PyList_GET_ITEM(credit_row, A_CPO), &credits_posted_before) ||
            !as_u64(PyList_GET_ITEM(credit_row, A_DPO), &credit_debits_posted)) {
            return index;
        }
        /* Sums of 64-bit values never reach the 128-bit maximum, so the overflow rules
         * cannot fire here; a new balance beyond 64 bits goes to Python all the same. */
        if (amount > UINT64_MAX - debits_posted_before ||
            amount > UINT64_MAX - credits_posted_before) {
            return index;
        }
        uint64_t debits_posted = debits_posted_before + amount;
        uint64_t credits_posted = credits_posted_before + amount;
        /* The limits, exactly: a pending + posted sum past 64 bits exceeds any 64-bit limit. */
        if ((debit_flags & DEBITS_MUST_NOT_EXCEED_CREDITS) &&
            (debits_pending > UINT64_MAX - debits_posted ||
             debits_pending + debits_posted > debit_credits_posted)) {
            return index;
        }
        if ((credit_flags & CREDITS_MUST_NOT_EXCEED_DEBITS) &&
            (credits_pending > UINT64_MAX - credits_posted ||
             credits_pending + credits_posted > credit_debits_posted)) {
            return index;
        }
        /* Sure to succeed. An error from here (out of memory) raises, and the caller abandons
         * the whole batch: nothing of it is written. */
        PyObject *stored = new_record(batch->transfer_type, T_FIELDS);
        PyObject *timestamp_object =
            PyLong_FromUnsignedLongLong(batch->timestamp_base + (uint64_t)index);
        if (stored == NULL || timestamp_object == NULL) {
            Py_XDECREF(stored);
            Py_XDECREF(timestamp_object);
            return -1;
        }
        /* As sent, with the ledger's timestamp (the last field). */
        for (Py_ssize_t field = 0; field < T_TIMESTAMP; field++) {
            PyObject *item = PyTuple_GET_ITEM(event, field);
            Py_INCREF(item);
            PyTuple_SET_ITEM(stored, field, item);
        }
        PyTuple_SET_ITEM(stored, T_TIMESTAMP, timestamp_object);
        untrack_if_plain_ints(stored);
        int failed_to_record = PyList_Append(batch->created, stored) ||
                               PyDict_SetItem(batch->created_by_id, id_object, stored);
        Py_DECREF(stored);
        if (failed_to_record) {
            return -1;
        }
        PyObject *debits_posted_object = PyLong_FromUnsignedLongLong(debits_posted);
        if (debits_posted_object == NULL) {
            return -1;
        }
        PyObject *credits_posted_object = PyLong_FromUnsignedLongLong(credits_posted);
        if (credits_posted_object == NULL) {
            Py_DECREF(debits_posted_object);
            return -1;
        }
        /* PyList_SetItem takes the new values and releases the old ones. */
        PyList_SetItem(debit_row, A_DPO, debits_posted_object);
        PyList_SetItem(credit_row, A_CPO, credits_posted_object);
    }
    return index;
}

/*
 * apply_plain(events, start, timestamp_base, accounts, balances, transfers, failed,
 *             created, created_by_id, transfer_type) -> int
 *
 * Apply events[start:] while each is a plain transfer sure to succeed; return the index of
 * the first one that is not (len(events) when all were). The caller has checked that every
 * timestamp of the batch fits (timestamp_base + len(events) - 1 <= 2**63 - 1) and that no
 * linked chain is open.
 */
static PyObject *
apply_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "apply_plain takes 10 arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Batch batch = {
        .events = args[0],
        .accounts = args[3],
        .balances = args[4],
        .transfers = args[5],
        .failed = args[6],
        .created = args[7],
        .created_by_id = args[8],
        .transfer_type = (PyTypeObject *)args[9],
    };
    if (!PyList_CheckExact(batch.events) || !PyDict_CheckExact(batch.accounts) ||
        !PyDict_CheckExact(batch.balances) || !PyDict_CheckExact(batch.transfers) ||
        !PyDict_CheckExact(batch.failed) || !PyList_CheckExact(batch.created) ||
        !PyDict_CheckExact(batch.created_by_id) || !PyType_Check(args[9]) ||
        !PyType_IsSubtype(batch.transfer_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "apply_plain: unexpected argument types");
        return NULL;
    }
    if (!as_u64(args[2], &batch.timestamp_base)) {
        /* Not a plain int (a clock returning an int subclass): the Python loop decides. */
        return PyLong_FromSsize_t(start);
    }
    batch.id_max = PyLong_FromString("340282366920938463463374607431768211455", NULL, 10);
    if (batch.id_max == NULL) {
        return NULL;
    }
    Py_ssize_t stopped_at = apply_run(&batch, start < 0 ? 0 : start);
    Py_DECREF(batch.id_max);
    return stopped_at < 0 ? NULL : PyLong_FromSsize_t(stopped_at);
}

/* Unsigned widths of a Transfer's fields, in order (paycell.core.events checks the same). */
static const unsigned transfer_field_bits[T_FIELDS] = {
    128, 128, 128, 128, 128, 128, 64, 32, 32, 32, 16, 16, 64,
};

/*
 * well_formed_prefix(events, transfer_type) -> int
 *
 * The index of the first event that is not a `transfer_type` record of exact ints, each
 * within its field's width (len(events) when all are). paycell.core.events checks (and
 * diagnoses) the events from there on.
 */
static PyObject *
well_formed_prefix(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "well_formed_prefix takes a list and a type");
        return NULL;
    }
    PyObject *events = args[0];
    PyTypeObject *transfer_type = (PyTypeObject *)args[1];
    Py_ssize_t count = PyList_GET_SIZE(events);
    Py_ssize_t index = 0;
    for (; index < count; index++) {
        PyObject *event = PyList_GET_ITEM(events, index);
        if (Py_TYPE(event) != transfer_type || !PyTuple_Check(event) ||
            PyTuple_GET_SIZE(event) != T_FIELDS) {
            break;
        }
        Py_ssize_t field = 0;
        while (field < T_FIELDS &&
               fits(PyTuple_GET_ITEM(event, field), transfer_field_bits[field])) {
            field++;
        }
        if (field < T_FIELDS) {
            break;
        }
    }
    return PyLong_FromSsize_t(index);
}

/* "00" to "99": two decimal digits a division (a timestamp has 19). */
static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal digits of `value` written backwards from `end`; returns the first digit. */
static char *
digits_before(char *end, uint64_t value)
{
    while (value >= 100) {
        const char *pair = digit_pairs + 2 * (value % 100);
        value /= 100;
        *--end = pair[1];
        *--end = pair[0];
    }
    if (value >= 10) {
        const char *pair = digit_pairs + 2 * value;
        *--end = pair[1];
        *--end = pair[0];
    } else {
        *--end = (char)('0' + value);
    }
    return end;
}

/*
 * transfer_lines(transfers) -> bytes | None
 *
 * b"".join(b"T %d %d ... %d\n" % t for t in transfers), the journal's transfer records, or
 * None when a field is not a plain int within 64 unsigned bits (the caller formats those).
 */
static PyObject *
transfer_lines(PyObject *module, PyObject *transfers)
{
    (void)module;
    if (!PyList_CheckExact(transfers)) {
        PyErr_SetString(PyExc_TypeError, "transfer_lines takes a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(transfers);
    /* At most "T " + 13 fields of 20 digits and a separator each: 2 + 13 * 21 bytes. */
    const Py_ssize_t line_max = 2 + T_FIELDS * 21;
    if (count > PY_SSIZE_T_MAX / line_max) {
        PyErr_SetString(PyExc_OverflowError, "too many transfers");
        return NULL;
    }
    PyObject *text = PyBytes_FromStringAndSize(NULL, count * line_max);
    if (text == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(text);
    char scratch[24];
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *transfer = PyList_GET_ITEM(transfers, index);
        if (!PyTuple_Check(transfer) || PyTuple_GET_SIZE(transfer) != T_FIELDS) {
            Py_DECREF(text);
            Py_RETURN_NONE;
        }
        *out++ = 'T';
        for (Py_ssize_t field = 0; field < T_FIELDS; field++) {
            uint64_t value;
            if (!as_u64(PyTuple_GET_ITEM(transfer, field), &value)) {
                Py_DECREF(text);
                Py_RETURN_NONE;
            }
            char *end = scratch + sizeof scratch;
            char *first = digits_before(end, value);
            *out++ = ' ';
            memcpy(out, first, (size_t)(end - first));
            out += end - first;
        }
        *out++ = '\n';
    }
    if (_PyBytes_Resize(&text, out - PyBytes_AS_STRING(text)) < 0) {
        return NULL;
    }
    return text;
}

/*
 * updated_accounts(balances, accounts, account_type) -> dict | None
 *
 * For each working row in `balances`, the account it now is, keyed by id, leaving out rows
 * equal to the account as prefetched (touched by a transfer that then failed). None when a
 * row's pending balances are not plain ints within 64 unsigned bits: the caller then does it
 * in Python, which asserts that they are within [0, 2**128 - 1].
 */
static PyObject *
updated_accounts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "updated_accounts takes 3 arguments");
        return NULL;
    }
    PyObject *balances = args[0], *accounts = args[1], *account_type = args[2];
    if (!PyDict_CheckExact(balances) || !PyDict_CheckExact(accounts) ||
        !PyType_Check(account_type) ||
        !PyType_IsSubtype((PyTypeObject *)account_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "updated_accounts: unexpected argument types");
        return NULL;
    }
    /* Plain 64-bit values are within range by construction; anything else goes to Python. */
    PyObject *key, *row;
    Py_ssize_t position = 0;
    while (PyDict_Next(balances, &position, &key, &row)) {
        uint64_t ignored;
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != A_FIELDS ||
            !as_u64(PyList_GET_ITEM(row, A_DP), &ignored) ||
            !as_u64(PyList_GET_ITEM(row, A_CP), &ignored)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *updated = PyDict_New();
    if (updated == NULL) {
        return NULL;
    }
    position = 0;
    while (PyDict_Next(balances, &position, &key, &row)) {
        PyObject *before = PyDict_GetItemWithError(accounts, key);
        if (before == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, key);
            }
            Py_DECREF(updated);
            return NULL;
        }
        PyObject *after = new_record((PyTypeObject *)account_type, A_FIELDS);
        if (after == NULL) {
            Py_DECREF(updated);
            return NULL;
        }
        for (Py_ssize_t field = 0; field < A_FIELDS; field++) {
            PyObject *item = PyList_GET_ITEM(row, field);
            Py_INCREF(item);
            PyTuple_SET_ITEM(after, field, item);
        }
        untrack_if_plain_ints(after);
        int same = PyObject_RichCompareBool(after, before, Py_EQ);
        if (same < 0 || (!same && PyDict_SetItem(updated, key, after) < 0)) {
            Py_DECREF(after);
            Py_DECREF(updated);
            return NULL;
        }
        Py_DECREF(after);
    }
    return updated;
}

/*
 * int64_rows(records, fields, fallback) -> list
 *
 * [plain tuple of record[f] for f in fields if all are ints in [0, 2**63), else
 *  fallback(record), for each record]: rows to bind to a database whose INTEGER is a signed
 * 64-bit value. A plain tuple binds faster than a record (sqlite3 binds a tuple by index);
 * `fallback` encodes the rare record with a wider value.
 */
static PyObject *
int64_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "int64_rows takes a list, a tuple of field positions and a callable");
        return NULL;
    }
    PyObject *records = args[0], *fields = args[1], *fallback = args[2];
    Py_ssize_t width = PyTuple_GET_SIZE(fields);
    Py_ssize_t positions[32];
    if (width > (Py_ssize_t)(sizeof positions / sizeof positions[0])) {
        PyErr_SetString(PyExc_ValueError, "int64_rows takes at most 32 fields");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < width; i++) {
        positions[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(fields, i));
        if (positions[i] < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "field positions are not negative");
            }
            return NULL;
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(records);
    PyObject *rows = PyList_New(count);
    if (rows == NULL) {
        return NULL;
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *record = PyList_GET_ITEM(records, index);
        int plain = PyTuple_Check(record);
        for (Py_ssize_t i = 0; plain && i < width; i++) {
            if (positions[i] >= PyTuple_GET_SIZE(record)) {
                plain = 0;
                break;
            }
            PyObject *item = PyTuple_GET_ITEM(record, positions[i]);
            int overflow = 0;
            plain = PyLong_CheckExact(item) &&
                    PyLong_AsLongLongAndOverflow(item, &overflow) >= 0 && overflow == 0;
        }
        PyObject *row;
        if (plain) {
            row = PyTuple_New(width);
            if (row != NULL) {
                for (Py_ssize_t i = 0; i < width; i++) {
                    PyObject *item = PyTuple_GET_ITEM(record, positions[i]);
                    Py_INCREF(item);
                    PyTuple_SET_ITEM(row, i, item);
                }
            }
        } else {
            row = PyObject_CallOneArg(fallback, record);
        }
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, index, row);
    }
    return rows;
}

/*
 * flat_chunks(rows, chunk, width) -> list | None
 *
 * [[*rows[i], ..., *rows[i + chunk - 1]] for each whole chunk of `chunk` rows, in order]: the
 * values each multi-row INSERT binds, with the rest (fewer than `chunk` rows) left out. None
 * when a row of a whole chunk is not a tuple of `width` values: the caller flattens in Python
 * (and refuses a row of another width).
 */
static PyObject *
flat_chunks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyLong_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "flat_chunks takes a list, a chunk size and a width");
        return NULL;
    }
    PyObject *rows = args[0];
    Py_ssize_t chunk = PyLong_AsSsize_t(args[1]);
    Py_ssize_t width = PyLong_AsSsize_t(args[2]);
    if (chunk <= 0 || width <= 0 || chunk > PY_SSIZE_T_MAX / width) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "the chunk size and the width are positive");
        }
        return NULL;
    }
    Py_ssize_t chunks = PyList_GET_SIZE(rows) / chunk;
    PyObject *flat = PyList_New(chunks);
    if (flat == NULL) {
        return NULL;
    }
    for (Py_ssize_t c = 0; c < chunks; c++) {
        PyObject *values = PyList_New(chunk * width);
        if (values == NULL) {
            Py_DECREF(flat);
            return NULL;
        }
        PyList_SET_ITEM(flat, c, values);  /* freed with `flat` from here on */
        /* Checked as copied, after the allocations: one can run a collection, whose
         * finalizers could change `rows`. */
        if (PyList_GET_SIZE(rows) < (c + 1) * chunk) {
            Py_DECREF(flat);
            Py_RETURN_NONE;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t r = c * chunk; r < (c + 1) * chunk; r++) {
            PyObject *row = PyList_GET_ITEM(rows, r);
            if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != width) {
                Py_DECREF(flat);
                Py_RETURN_NONE;
            }
            for (Py_ssize_t i = 0; i < width; i++) {
                PyObject *value = PyTuple_GET_ITEM(row, i);
                Py_INCREF(value);
                PyList_SET_ITEM(values, at++, value);
            }
        }
    }
    return flat;
}

/* Append `value` to `out` as `width` (4 or 8) bytes, least significant first. */
static unsigned char *
put_little_endian(unsigned char *out, uint64_t value, int width)
{
    for (int i = 0; i < width; i++) {
        *out++ = (unsigned char)(value >> (8 * i));
    }
    return out;
}

/*
 * pack_changes(accounts) -> bytes | None
 *
 * The SQLite account log's packed changes (adapters/storage/sqlite_account_log.py, which
 * defines the format and decodes it): for each account, in order, (id, debits_pending,
 * debits_posted, credits_pending, credits_posted, flags) as little-endian unsigned ints, all
 * 4 bytes wide after a b"I" when every value fits 32 bits, else all 8 bytes wide after a b"Q".
 * The four bytes after the format are left zero: the caller writes the checksum there. None
 * when an account is not a record of 13 exact ints or a value does not fit 64 bits: the
 * caller packs it in Python, in the 16-byte format.
 */
static PyObject *
pack_changes(PyObject *module, PyObject *accounts)
{
    (void)module;
    static const Py_ssize_t fields[6] = {0, A_DP, A_DPO, A_CP, A_CPO, A_FLAGS};
    if (!PyList_CheckExact(accounts)) {
        PyErr_SetString(PyExc_TypeError, "pack_changes takes a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(accounts);
    if (count > PY_SSIZE_T_MAX / 48 - 5) {
        return PyErr_NoMemory();
    }
    uint64_t top = 0;
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *account = PyList_GET_ITEM(accounts, index);
        if (!PyTuple_Check(account) || PyTuple_GET_SIZE(account) != A_FIELDS) {
            Py_RETURN_NONE;
        }
        for (int f = 0; f < 6; f++) {
            uint64_t value;
            if (!as_u64(PyTuple_GET_ITEM(account, fields[f]), &value)) {
                Py_RETURN_NONE;
            }
            top |= value;
        }
    }
    int width = top >> 32 == 0 ? 4 : 8;
    PyObject *packed = PyBytes_FromStringAndSize(NULL, 5 + count * 6 * width);
    if (packed == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(packed);
    *out++ = width == 4 ? 'I' : 'Q';
    memset(out, 0, 4);  /* the checksum's place */
    out += 4;
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *account = PyList_GET_ITEM(accounts, index);
        for (int f = 0; f < 6; f++) {
            uint64_t value = 0;
            as_u64(PyTuple_GET_ITEM(account, fields[f]), &value);  /* checked above */
            out = put_little_endian(out, value, width);
        }
    }
    return packed;
}

#ifndef PAYCELL_SOURCE_SHA256
#define PAYCELL_SOURCE_SHA256 "unknown"  /* built other than by setup.py */
#endif

/* The constants compiled in, for the Python side to check against its own at import, and the
 * SHA-256 of the source it was built from, for the tests to check against the source. */
static PyObject *
constants(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue(
        "{s:s,s:i,s:i,s:i,s:i,s:(iiiiiiiiii),s:(iiiiii)}",
        "source_sha256", PAYCELL_SOURCE_SHA256,
        "DEBITS_MUST_NOT_EXCEED_CREDITS", DEBITS_MUST_NOT_EXCEED_CREDITS,
        "CREDITS_MUST_NOT_EXCEED_DEBITS", CREDITS_MUST_NOT_EXCEED_DEBITS,
        "HISTORY", HISTORY,
        "CLOSED", CLOSED,
        "transfer_fields", T_ID, T_DEBIT, T_CREDIT, T_AMOUNT, T_PENDING_ID, T_TIMEOUT,
        T_LEDGER, T_CODE, T_FLAGS, T_TIMESTAMP,
        "account_fields", A_DP, A_DPO, A_CP, A_CPO, A_LEDGER, A_FLAGS);
}

static PyMethodDef fastpath_methods[] = {
    {"apply_plain", (PyCFunction)(void (*)(void))apply_plain, METH_FASTCALL,
     "Apply plain transfers sure to succeed from `start`; return the first index not applied."},
    {"well_formed_prefix", (PyCFunction)(void (*)(void))well_formed_prefix, METH_FASTCALL,
     "The index of the first event that is not surely well-formed."},
    {"transfer_lines", transfer_lines, METH_O,
     "The journal's transfer records as one bytes object, or None to format in Python."},
    {"updated_accounts", (PyCFunction)(void (*)(void))updated_accounts, METH_FASTCALL,
     "The accounts a batch's working rows changed, or None to compute in Python."},
    {"int64_rows", (PyCFunction)(void (*)(void))int64_rows, METH_FASTCALL,
     "Plain tuples of the records' fields where they fit a signed 64-bit INTEGER."},
    {"flat_chunks", (PyCFunction)(void (*)(void))flat_chunks, METH_FASTCALL,
     "The rows' values, flattened per whole chunk of rows, or None to flatten in Python."},
    {"pack_changes", pack_changes, METH_O,
     "The account log's packed changes of the accounts, or None to pack in Python."},
    {"constants", constants, METH_NOARGS, "The field positions and flag bits compiled in."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "paycell.core._fastpath",
    .m_doc = "The ledger state machine's plain-transfer fast path, compiled.",
    .m_size = 0,
    .m_methods = fastpath_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModuleDef_Init(&fastpath_module);
}
