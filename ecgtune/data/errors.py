"""Errors raised when a source file does not match its published format.

Both subclass ValueError (house style: project exceptions subclass built-ins),
so callers can catch either the specific error or ValueError. Every message
names the offending file and says what was expected there.
"""

from __future__ import annotations


class RecordFormatError(ValueError):
    """A signal file (DeepFake `.asc`, WFDB `.hea`/`.dat`) is missing parts, malformed or unusable.

    `reason` names the kind of problem; a converter counts skipped records under it.
    """

    def __init__(self, message: str, reason: str = "malformed_record"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason across process pools
        return (type(self), (str(self), self.reason))


class LabelFormatError(ValueError):
    """A label or metadata table (ground-truth CSV, ptbxl_database.csv, PTB-XL+ features) is malformed."""
