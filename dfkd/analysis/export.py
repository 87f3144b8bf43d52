"""Tables for papers: a LaTeX `table` with booktabs rules from a data frame.

Written by hand (pandas' `to_latex` needs jinja2): every cell is escaped, numbers are right
aligned and formatted with `float_format`, missing values print as `--`. The output needs
`\\usepackage{booktabs}` in the document's preamble.
"""
from __future__ import annotations

import math
import numbers

import pandas as pd

# The characters that LaTeX treats specially in text, and what prints them.
_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
MISSING = "--"


def escape_latex(text: object) -> str:
    """`text` with LaTeX's special characters escaped, so that it prints as written."""
    return "".join(_SPECIALS.get(char, char) for char in str(text))


def _cell(value: object, float_format: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING
    if isinstance(value, bool):
        return escape_latex(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return escape_latex(float_format.format(float(value)))
    return escape_latex(value)


def latex_table(frame: pd.DataFrame, caption: str, label: str, float_format: str = "{:.1f}") -> str:
    """A complete `table` environment (booktabs rules) holding `frame`, without its index.

    Numeric columns are right aligned, the others left aligned. `caption` is escaped; `label`
    is used as given (a `\\label` key such as `tab:main`).
    """
    align = "".join("r" if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) else "l"
                    for dtype in frame.dtypes)
    header = " & ".join(escape_latex(column) for column in frame.columns)
    rows = [" & ".join(_cell(value, float_format) for value in record) + r" \\"
            for record in frame.itertuples(index=False, name=None)]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{escape_latex(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        header + r" \\",
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
