"""The project's exceptions.

Every error a user can cause derives from LabinterpError and names the file, the row where
known, and the fix. Each subclass also inherits the builtin it resembles, so callers that
catch ValueError or FileNotFoundError keep working. The CLI turns these into exit code 2.
Messages never contain patient identifiers or result values.
"""

from __future__ import annotations


class LabinterpError(Exception):
    """Base class for problems with the user's input, options or configuration."""

    # The column names read from a file whose columns could not be used: cells of the
    # file, possibly a patient's data (a headerless export), so never part of a message;
    # `labinterp check` lists them, on the user's request.
    columns_read: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.fix = fix
        self.problem = message
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}"
            if self.row is not None:
                where += f", row {self.row}"
            where += ": "
        text = f"{where}{self.problem}"
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class InputFileError(LabinterpError, ValueError):
    """The file cannot be read as a lab export (empty, binary, wrong type, too long a line)."""


class DamagedFileError(InputFileError):
    """An export that breaks partway: compression or text damaged past its start, a JSON
    document cut short or a FHIR one malformed, or an NDJSON line that is not JSON after
    lines that were. Unlike a file that is not an
    export at all, it is never skipped when found in a folder: skipping would silently
    drop the rows it holds."""


class InputNotFoundError(LabinterpError, FileNotFoundError):
    """A path the user named does not exist."""


class ColumnDetectionError(LabinterpError, KeyError):
    """No column for a required field (patient, time, test, value) could be recognised."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0] if self.args else ""


class MappingFileError(LabinterpError, ValueError):
    """A mapping file (TOML) is malformed or names columns the export does not have."""


class DateFormatError(LabinterpError, ValueError):
    """Dates in a file are ambiguous (US vs European) or use two-digit years."""


class UnitError(LabinterpError, ValueError):
    """A unit spelling is unknown, or not valid for the analyte."""


class ConfigError(LabinterpError, ValueError):
    """A bundled or user-supplied data file (catalog, parameters, ranges) is invalid."""


class SchemaError(TypeError):
    """A table handed between stages does not match its documented schema.

    Deliberately not a LabinterpError: it is a bug in labinterp, not in the user's input,
    so the CLI reports it as an unexpected error (exit 1).
    """


class OutputError(LabinterpError, OSError):
    """An output cannot be written (folder missing, not writable)."""
