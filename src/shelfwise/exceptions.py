"""Every error shelfwise raises on purpose derives from :class:`ShelfwiseError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ShelfwiseError(Exception):
    """Base class of shelfwise's own errors."""


class NotFittedError(ShelfwiseError, AttributeError):
    """An estimator was used before ``fit`` (an AttributeError too, as in scikit-learn)."""


class ConfigError(ShelfwiseError):
    """A configuration value is missing, unknown or inconsistent."""


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one ``  - field.path: message`` line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


class InvalidRequestError(ShelfwiseError):
    """A request's content is unusable as sent (HTTP 422): the message names the field."""


class NotFoundError(ShelfwiseError):
    """A referenced entity (item, user, bundle, preset) does not exist."""


class ConflictError(ShelfwiseError):
    """The request clashes with the current state (HTTP 409): the message says what to do."""


class StoreError(ShelfwiseError):
    """The store could not complete an operation."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad value: where it is, what it was and what was expected."""

    row: int | None
    field: str
    message: str
    value: object = None

    def describe(self, source: str) -> str:
        where = f"{source}, row {self.row}" if self.row is not None else source
        shown = "" if self.value is None else f" (got {self.value!r:.60})"
        return f"{where}, field '{self.field}': {self.message}{shown}"


class DataValidationError(ShelfwiseError):
    """Input data failed validation; nothing was written.

    ``problems`` lists each bad value with its row (1-based data row, header excluded) and field.
    """

    def __init__(self, source: str, problems: list[FieldProblem], total: int | None = None):
        self.source = source
        self.problems = problems
        self.total = total if total is not None else len(problems)
        shown = "\n".join("  - " + p.describe(source) for p in problems)
        more = self.total - len(problems)
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(
            f"{self.total} problem(s) in {source}; nothing was imported:\n{shown}{tail}"
        )
