"""CSV that is safe to open in a spreadsheet, and the reading counterpart that restores the original values.

Review text is written by strangers. A CSV cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is read as a formula by Excel, LibreOffice and Google Sheets (CSV injection), so every CSV written for
people prefixes such string cells with a single quote: spreadsheets show the quote-prefixed cell as the text it
was. Numbers stay numbers; only string cells change. A cell that already starts with a quote followed by
something that would be neutralised gets one more quote, so `restore_cell` is the exact inverse of
`neutralise_cell` and a file read back by the product holds the values that were written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def _needs_quote(text: str) -> bool:
    # A quote followed by a cell that needs one would otherwise read back one quote short.
    stripped = text.lstrip(QUOTE)
    return stripped.startswith(FORMULA_STARTS)


def neutralise_cell(value: Any) -> Any:
    """A string a spreadsheet would read as a formula, prefixed with ``'``; anything else unchanged.

    Parameters
    ----------
    value
        One cell. Only `str` values are changed: numbers (``-0.5``), booleans and missing values are not.
    """
    if isinstance(value, str) and _needs_quote(value):
        return QUOTE + value
    return value


def restore_cell(value: Any) -> Any:
    """The value `neutralise_cell` was given: one leading ``'`` removed where `neutralise_cell` added it."""
    if isinstance(value, str) and value.startswith(QUOTE) and _needs_quote(value[1:]):
        return value[1:]
    return value


def _map_text(frame: pd.DataFrame, func: Any) -> pd.DataFrame:
    """A copy of `frame` with `func` applied to every cell of its string columns (object, string, category)."""
    import pandas as pd

    out = frame.copy()
    for column, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            out[column] = out[column].astype(object)
        elif not (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)):
            continue  # numbers, booleans and dates keep their type: -0.5 is a number, not a formula
        out[column] = out[column].map(func, na_action="ignore")
    return out


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose string cells went through `neutralise_cell`; other columns untouched."""
    return _map_text(frame, neutralise_cell)


def restore_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a frame read from a neutralised CSV with every string cell restored (`restore_cell`)."""
    return _map_text(frame, restore_cell)


def to_safe_csv(frame: pd.DataFrame, path: str | Path | None = None, **kwargs: Any) -> str | None:
    """Write `frame` as spreadsheet-safe CSV (`neutralise_frame`), without the index unless asked.

    Parameters
    ----------
    frame
        The table to write.
    path
        File to write; ``None`` returns the CSV text instead, as `pandas.DataFrame.to_csv` does.
    **kwargs
        Passed on to `pandas.DataFrame.to_csv`.
    """
    kwargs.setdefault("index", False)
    return neutralise_frame(frame).to_csv(path, **kwargs)


def read_safe_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV written by `to_safe_csv` back to the values it was given (`restore_frame`)."""
    import pandas as pd

    return restore_frame(pd.read_csv(path, **kwargs))
