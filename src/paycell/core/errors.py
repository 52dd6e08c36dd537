"""The one exception tree of paycell's input boundary.

Business rejections of well-formed events are *results* (see `results`), never exceptions.
These exceptions are for input that is not a well-formed event at all (a negative amount, an
id wider than 128 bits, an oversize batch, an unknown flag bit): the caller broke the contract,
nothing is changed, and the error names the field so the caller can fix it.
"""


class PaycellError(Exception):
    """Base of every error paycell raises on purpose. `code` is stable and documented."""

    code = "paycell_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(PaycellError, ValueError):
    """Input is not well-formed; nothing was changed."""

    code = "invalid_input"


class InvalidFieldError(InvalidInputError):
    """One field of one event is out of its type's range or of the wrong type."""

    code = "invalid_field"

    def __init__(self, message: str, *, field: str, index: int | None = None) -> None:
        where = f"event {index}: " if index is not None else ""
        super().__init__(f"{where}{field}: {message}")
        self.field = field
        self.index = index


class BatchTooLargeError(InvalidInputError):
    """More events than one batch may hold (`limits.BATCH_EVENTS_MAX`)."""

    code = "batch_too_large"


class BatchEmptyError(InvalidInputError):
    """A batch with no events: rejected so an empty request is never mistaken for success."""

    code = "batch_empty"
