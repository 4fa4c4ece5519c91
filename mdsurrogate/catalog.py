"""Recipes by name: the TOML files shipped in the package, recipes derived from them, and reading any recipe.

A recipe is found by name (``nbody_demo``) in the package's ``recipes/`` folder through ``importlib.resources``, so
it works from an installed package in any directory; a path to a TOML file works too (:func:`read_recipe`).

**Derived recipes.** A family of names maps onto one base recipe plus a configuration parsed from the name. The
M-complex grid of the EGHN paper (Table 1) is one: ``mcomplex_{M}_{A}_J{J}_{model}`` is ``mcomplex_{model}.toml``
with

    data.path        = "data/mcomplex_{M}_{A}_J{J}"   (made by ``mdsurrogate ingest mcomplex PATH --complexes M
                                                        --size A --systems J``)
    model.n_clusters = M                              (only where the base recipe sets n_clusters: K = M, as in
                                                        the paper)

and its own name and description. Any M, A, J parse; ``recipe_names()`` lists the eight Table-1 configurations.

**base chains.** ``base = "other.toml"`` starts from another recipe (path relative to the including file); tables
merge key by key and the top file wins.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import RecipeError

# EGHN paper, Table 1: (M, N/M, J) configurations, in the paper's column order
MCOMPLEX_CONFIGS: tuple[tuple[int, int, int], ...] = ((3, 3, 1), (5, 5, 1), (5, 10, 1), (10, 10, 1),
                                                      (3, 3, 5), (5, 5, 5), (5, 10, 5), (10, 10, 5))


def recipe_dir() -> Path:
    """The folder of the shipped recipes (inside the installed package)."""
    return Path(str(resources.files("mdsurrogate") / "recipes"))


# -- reading files ---------------------------------------------------------------------------------------------
def merge(base: dict, top: dict) -> dict:
    """Recursive dict merge: tables merge key by key, anything else in ``top`` replaces ``base``."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Parse a recipe file, resolving ``base = "…"`` chains (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    if path.resolve() in _seen:
        raise RecipeError(f"recipe {path} includes itself through its base key")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} is not valid TOML ({exc})") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = read_recipe_file(path.parent / str(base), _seen + (path.resolve(),))
    parent.pop("name", None)
    parent.pop("description", None)
    return merge(parent, raw)


# -- derived recipes -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Names matching ``pattern`` (named groups, one of them ``model``) derive from the recipe ``base`` (a name
    template): ``derive(raw, name, fields)`` applies the configuration, ``ingest(fields)`` is the command line that
    makes its dataset, ``listed`` the configurations ``recipe_names()`` lists, ``name`` makes a name."""

    pattern: str
    base: str
    name: Callable[..., str]
    derive: Callable[[dict, str, dict], dict]
    ingest: Callable[[dict], list[str]]
    listed: tuple[dict, ...]

    def match(self, name: str) -> dict | None:
        m = re.fullmatch(self.pattern, name)
        return m.groupdict() if m else None


def _mcomplex_fields(fields: dict) -> tuple[int, int, int]:
    return int(fields["M"]), int(fields["A"]), int(fields["J"])


def _mcomplex_derive(raw: dict, name: str, fields: dict) -> dict:
    """The M-complex configuration (M, A, J) applied to the base recipe ``raw`` (see the module docstring)."""
    m, a, j = _mcomplex_fields(fields)
    base = str(raw.get("name", ""))
    label = str(raw.get("description", fields["model"])).split(" on M-complex")[0]
    out = merge(raw, {"name": name, "data": {"path": f"data/mcomplex_{m}_{a}_J{j}"},
                      "description": f"{label} on M-complex (M, N/M, J) = ({m}, {a}, {j}), EGHN paper Table 1; "
                                     f"base recipe {base}."})
    if "n_clusters" in out.get("model", {}):
        out["model"]["n_clusters"] = m
    return out


def _mcomplex_ingest(fields: dict) -> list[str]:
    m, a, j = _mcomplex_fields(fields)
    return ["mdsurrogate", "ingest", "mcomplex", f"data/mcomplex_{m}_{a}_J{j}", "--complexes", str(m), "--size",
            str(a), "--systems", str(j)]


MCOMPLEX = Family(
    pattern=r"mcomplex_(?P<M>[1-9][0-9]*)_(?P<A>[1-9][0-9]*)_J(?P<J>[1-9][0-9]*)_(?P<model>[a-z0-9_]+)",
    base="mcomplex_{model}",
    name=lambda model, M, A, J: f"mcomplex_{M}_{A}_J{J}_{model}",
    derive=_mcomplex_derive,
    ingest=_mcomplex_ingest,
    listed=tuple({"M": m, "A": a, "J": j} for m, a, j in MCOMPLEX_CONFIGS),
)
FAMILIES: tuple[Family, ...] = (MCOMPLEX,)


def _derived(name: str) -> tuple[Family, dict, Path] | None:
    """(family, fields, base recipe file) of a derived name whose base recipe exists, else None."""
    for fam in FAMILIES:
        fields = fam.match(name)
        if fields is not None:
            base = recipe_dir() / f"{fam.base.format(**fields)}.toml"
            if base.is_file():
                return fam, fields, base
    return None


# -- names -----------------------------------------------------------------------------------------------------
def _file_names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def recipe_names() -> list[str]:
    """Every shipped recipe: the files and the listed configurations of the derived families, in natural order."""
    files = _file_names()
    derived = []
    for fam in FAMILIES:
        for stem in files:
            m = re.fullmatch(fam.base.replace("{model}", "(?P<model>[a-z0-9_]+)"), stem)
            if m:
                derived += [fam.name(m.group("model"), **c) for c in fam.listed]
    return sorted(set(files) | set(derived), key=_natural)


def _natural(name: str) -> list:
    """Sort key with numbers compared as numbers (mcomplex_5_5 before mcomplex_10_10)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


def is_recipe_name(name: str) -> bool:
    """Whether ``name`` is a shipped recipe (a file or a derived configuration)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name)) and (
        (recipe_dir() / f"{name}.toml").is_file() or _derived(name) is not None)


def read_named_recipe(name: str) -> dict:
    """The raw dict of a shipped recipe (``base`` resolved; derived configuration applied)."""
    path = recipe_dir() / f"{name}.toml"
    if path.is_file():
        return read_recipe_file(path)
    hit = _derived(name)
    if hit is None:
        import difflib

        close = difflib.get_close_matches(name, recipe_names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"unknown recipe {name!r}{hint} (the shipped recipes are listed by `recipe_names()`, on "
                          "the command line by `mdsurrogate recipes`)")
    fam, fields, base = hit
    return fam.derive(read_recipe_file(base) | {"name": base.stem}, name, fields)


def read_recipe(recipe: str | Path) -> dict:
    """The raw dict of a recipe given as a path to a TOML file or as the name of a shipped recipe.

    An existing file wins over a shipped name; a string that looks like a path (``.toml``, a folder separator) and
    does not exist is an error, not a name lookup.
    """
    text = str(recipe)
    if Path(text).is_file() or text.endswith(".toml") or "/" in text or "\\" in text:
        return read_recipe_file(Path(text))
    return read_named_recipe(text)


def ingest_command(recipe: str | Path) -> str | None:
    """The ``mdsurrogate ingest …`` command that makes the recipe's dataset, when the recipe says (a comment
    ``# mdsurrogate ingest …`` in the file or its ``base`` chain, or the derived configuration)."""
    text = str(recipe)
    if not (Path(text).is_file() or text.endswith(".toml") or "/" in text):
        hit = None if (recipe_dir() / f"{text}.toml").is_file() else _derived(text)
        if hit is not None:
            return shlex.join(hit[0].ingest(hit[1]))
        path = recipe_dir() / f"{text}.toml"
    else:
        path = Path(text)
    return _comment_command(path)


def _comment_command(path: Path, depth: int = 0) -> str | None:
    if not path.is_file() or depth > 10:
        return None
    source = path.read_text()
    m = re.search(r"#\s*(mdsurrogate ingest .*?)\s*$", source, re.M)
    if m:
        return m.group(1)
    base = re.search(r'^base\s*=\s*"(.+)"', source, re.M)
    return _comment_command(path.parent / base.group(1), depth + 1) if base else None


def describe(name: str) -> str:
    """The description of a shipped recipe (one line)."""
    return str(read_named_recipe(name).get("description", "")).strip()


__all__ = ["FAMILIES", "MCOMPLEX_CONFIGS", "describe", "ingest_command", "is_recipe_name", "merge", "read_named_recipe",
           "read_recipe", "read_recipe_file", "recipe_dir", "recipe_names"]
