"""``workbench campaigns``: product bursts, groups of accounts and the products they target, for one batch."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.main import JsonOption, _print_json, app, handle_errors, out


@app.command()
@handle_errors
def campaigns(
    batch: Annotated[str | None, typer.Argument(
        help="Stored batch name or review file; default: the workspace's current batch.")] = None,
    level: Annotated[float, typer.Option(
        "--level", help="False-alarm level of the burst test per product (divided by the product's days).")] = 0.01,
    top: Annotated[int, typer.Option("--top", help="Products, windows and groups shown (text output).")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Campaign evidence of a batch: products ranked by it, burst windows, groups of accounts.

    Reads who wrote each review, about which product and when, against every stored batch (the review history).
    Reviews without a reviewer id, product id or date have no such evidence; the first line says how many.
    """
    from core.errors import ParameterError
    from core.pipeline import Workspace

    if not 0 < level < 1:
        raise ParameterError(f"--level must be in (0, 1), got {level}")
    ws = Workspace.open()
    source = batch or ws.state().current
    if not source:
        raise ParameterError("name a batch (`workbench batches` lists them) or choose a current batch in the workbench")
    report = ws.campaigns(source, level=level)
    if as_json:
        _print_json(report.as_json())
        return
    out.print(f"{escape(report.batch)}: {report.coverage.line()}", highlight=False)
    if report.products:
        table = Table("product", "reviews", "campaign score", "burst windows", "reviews a day (month around)")
        for p in report.products[:top]:
            table.add_row(escape(p.product_id[:60]), str(p.reviews),
                          "-" if p.score != p.score else f"{p.score:.2f}", str(p.windows),
                          "-" if p.daily_rate != p.daily_rate else f"{p.daily_rate:.2g}")
        out.print(table)
        if all(p.score != p.score for p in report.products):
            out.print("no campaign score: the champion model does not read reviewer, product and timing evidence "
                      "(train one on a reference with reviewer ids, products and dates)", highlight=False)
    out.print(f"{len(report.windows)} burst window(s), {len(report.groups)} group(s) of accounts", highlight=False)
    for w in report.windows[:top]:
        out.print("window: " + w.line(), highlight=False, markup=False)
    for g in report.groups[:top]:
        out.print("group: " + g.line() + ": " + ", ".join(g.user_ids[:8])[:300], highlight=False, markup=False)
