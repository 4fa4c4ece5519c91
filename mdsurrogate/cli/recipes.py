"""`mdsurrogate recipes`: the shipped recipes with their descriptions; `recipes show NAME`: one of them resolved."""

from __future__ import annotations

import typer

from .app import JSON_OUT, app, emit_json, friendly, out

recipes_app = typer.Typer(help="The recipes shipped with mdsurrogate (train one with: mdsurrogate train NAME).",
                          invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback()
@friendly
def list_recipes(ctx: typer.Context, json_out: bool = JSON_OUT):
    """List the shipped recipes (name, model, description)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ..catalog import read_named_recipe, recipe_names

    rows = []
    for name in recipe_names():
        raw = read_named_recipe(name)
        rows.append({"name": name, "model": str(raw.get("model", {}).get("name", "")),
                     "description": str(raw.get("description", "")).strip()})
    if json_out:
        emit_json({"recipes": rows})
        return
    table = Table("recipe", "model", "description", box=None, show_edge=False, pad_edge=False)
    for r in rows:
        table.add_row(r["name"], r["model"], first_sentence(r["description"]))
    out.print(table)
    out.print(f"{len(rows)} recipes. Train one: mdsurrogate train NAME --data DATASET --out RUN; "
              "see one: mdsurrogate recipes show NAME", highlight=False)


def first_sentence(text: str) -> str:
    """Up to the first full stop followed by a space (the whole text when there is none)."""
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


@recipes_app.command("show")
@friendly
def show(name: str = typer.Argument(..., help="A shipped recipe's name (or a recipe TOML file).")):
    """Print the recipe resolved (base recipe merged, derived configuration and defaults filled in) as TOML."""
    from ..catalog import ingest_command
    from ..config import dump_toml, load_recipe

    _, resolved = load_recipe(name)
    hint = ingest_command(name)
    head = f"# {resolved['name'] or name}\n" + (f"# dataset: {hint}\n" if hint else "")
    typer.echo(head + dump_toml(resolved), nl=False)
