"""A strict reading of a WFDB header (`.hea`), field by field, before wfdb-python reads the record.

wfdb-python is lenient on purpose: it fills in or ignores header fields, so a plain
`wfdb.rdrecord` succeeds on a broken record and the damage reaches the store unseen
(an ADC gain of 0 becomes the default 200, so a lead recorded at 1000/mV is stored 5x
too large; a header copied from another record reads that record's samples). ecgtune
checks the header text itself and refuses what it would otherwise have to guess.

The format (PhysioNet, WFDB header(5)), and what ecgtune does with each field:

record line  `name[/segments] n_sig [fs[/counter_fs[(base_counter)]] [sig_len [base_time [base_date]]]]`
  name          must equal the header's own file name: else the header came from another
                record (`header_names_other_record`)
  /segments     a multi-segment record: refused (`unsupported_record`)
  n_sig         a whole number >= 1, equal to the number of signal lines (`malformed_header`)
  fs            must be given and positive: wfdb would assume 250 Hz (`header_incomplete`)
  sig_len       optional: without it the signal file decides the length
signal line  `file_name format[xsamp][:skew][+offset] [gain[(baseline)][/units] [adc_res [adc_zero
              [init_value [checksum [block_size [description]]]]]]]`
  file_name     a plain file name beside the header: a path (`/`, `..`) could reach outside the
                dataset (`path_outside_root`)
  format        checked by wfdb-python (an unknown format fails the read)
  gain          must be given, finite and non-zero: wfdb would substitute 200 (`invalid_gain`,
                `header_incomplete`)
  baseline      optional: WFDB defines it as adc_zero when absent
  units         optional: WFDB defines absent units as millivolts (PTB's headers omit them)
  checksum      optional: verified whenever the whole record is read
  description   the lead name: ecgtune's leads must each appear exactly once (`duplicate_lead`,
                missing leads are refused by `lead_channels`)
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ecgtune.data.errors import RecordFormatError

# gain[(baseline)][/units], e.g. "1000.0(0)/mV", "200", "2000/uV"
_GAIN = re.compile(r"^(?P<gain>[^(/]+)(?:\((?P<baseline>[^)]*)\))?(?:/(?P<units>.+))?$")


@dataclass(frozen=True)
class SignalLine:
    file_name: str
    gain: float
    units: str  # "mV" where the header states none (WFDB's default)
    description: str


@dataclass(frozen=True)
class Header:
    record_name: str
    n_sig: int
    fs: float
    sig_len: int | None
    signals: tuple[SignalLine, ...]


def _refuse(reason: str, message: str) -> RecordFormatError:
    if reason == "malformed_header":
        where, _, detail = message.partition(": ")
        message = f"{where}: unreadable WFDB header: {detail}"
    return RecordFormatError(message, reason=reason)


def read_header(hea: str | os.PathLike) -> Header:
    """Parse and check the header at `hea` (see the module docstring); raise RecordFormatError naming
    the file and the field, with a skip `reason`, for anything wfdb-python would have to guess."""
    hea = Path(hea)
    try:
        text = hea.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise _refuse("malformed_header", f"{hea}: not an ASCII WFDB header") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise _refuse(
            "malformed_header", f"{hea}: no record line; expected '<name> <n_sig> <fs> <n_samples>'"
        )
    fields = lines[0].split()
    name, _, segments = fields[0].partition("/")
    if segments:
        raise _refuse(
            "unsupported_record", f"{hea}: a multi-segment record ({fields[0]}); ecgtune reads single ones"
        )
    if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
        raise _refuse(
            "malformed_header", f"{hea}: record line {lines[0]!r}; expected a signal count after the name"
        )
    n_sig = int(fields[1])
    if name != hea.stem:
        raise _refuse(
            "header_names_other_record",
            f"{hea}: the record line names record {name!r}, not {hea.stem!r} (a header copied from another "
            "record would read that record's samples)",
        )
    if len(fields) < 3:
        raise _refuse(
            "header_incomplete", f"{hea}: no sampling frequency on the record line (wfdb would assume 250 Hz)"
        )
    fs = _number(fields[2].split("/")[0].split("(")[0], hea, "sampling frequency")
    if not fs > 0:
        raise _refuse(
            "malformed_header", f"{hea}: sampling frequency {fields[2]!r}; expected a positive number of Hz"
        )
    sig_len = None
    if len(fields) > 3:
        if not fields[3].isdigit():
            raise _refuse(
                "malformed_header", f"{hea}: signal length {fields[3]!r}; expected a whole number of samples"
            )
        sig_len = int(fields[3])
    signal_lines = lines[1 : 1 + n_sig]
    if len(signal_lines) != n_sig or len(lines) > 1 + n_sig:
        raise _refuse(
            "malformed_header",
            f"{hea}: the record line declares {n_sig} signals but {len(lines) - 1} lines follow",
        )
    signals = tuple(_signal_line(line, hea, i + 1) for i, line in enumerate(signal_lines))
    return Header(name, n_sig, fs, sig_len, signals)


def _number(text: str, hea: Path, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _refuse("malformed_header", f"{hea}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _refuse("malformed_header", f"{hea}: {what} {text!r}; expected a finite number")
    return value


def _signal_line(line: str, hea: Path, number: int) -> SignalLine:
    fields = line.split(maxsplit=8)
    file_name = fields[0]
    if "/" in file_name or "\\" in file_name or file_name in (".", ".."):
        raise _refuse(
            "path_outside_root",
            f"{hea}: signal {number} names file {file_name!r}; expected a file beside the header, not a path",
        )
    if len(fields) < 3:
        raise _refuse(
            "header_incomplete",
            f"{hea}: signal {number} has no ADC gain (wfdb would assume 200 per mV); "
            "expected e.g. '1000(0)/mV'",
        )
    m = _GAIN.match(fields[2])
    if m is None:
        raise _refuse(
            "malformed_header",
            f"{hea}: signal {number} gain field {fields[2]!r}; expected gain[(baseline)][/units]",
        )
    gain = _number(m["gain"], hea, f"signal {number} ADC gain")
    if gain == 0:
        raise _refuse(
            "invalid_gain",
            f"{hea}: signal {number} has ADC gain 0 (wfdb would substitute 200 per mV); "
            "expected the record's own gain",
        )
    description = fields[8].strip() if len(fields) > 8 else ""
    return SignalLine(file_name, gain, (m["units"] or "mV").strip(), description)
