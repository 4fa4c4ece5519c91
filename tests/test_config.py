"""Recipes: validation with helpful messages and --set overrides."""

from __future__ import annotations

import pytest

from mdsurrogate.apps.demo import packaged_recipe
from mdsurrogate.config import RecipeError, apply_overrides, load_recipe, recipe_from_dict


def test_shipped_recipes_are_valid():
    for name in ("nbody_egnn", "nbody_linear", "nbody_demo"):
        recipe, resolved = load_recipe(packaged_recipe(name))
        assert recipe.model.name in ("egnn", "linear")
    egnn, _ = load_recipe(packaged_recipe("nbody_egnn"))
    t = egnn.train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.eval_every) == (10000, 100, 5e-4, 1e-12, 5)
    assert (egnn.model.params["hidden"], egnn.model.params["layers"]) == (64, 4)


def test_every_shipped_propagator_recipe_loads():
    from importlib import resources

    names = sorted(p.stem for p in (resources.files("mdsurrogate") / "recipes").iterdir() if p.name.endswith(".toml"))
    loaded = 0
    for name in names:
        if name.endswith("_potential"):
            continue  # potential recipes have their own loader (training/potential_recipe.py)
        load_recipe(packaged_recipe(name))
        loaded += 1
    assert loaded > 50
    eghn, _ = load_recipe(packaged_recipe("adk_eghn"))
    m, t = eghn.model.params, eghn.train
    assert (m["hidden"], m["n_clusters"], m["cut_weight"], m["layers"]) == (128, 20, 2.0, 4)
    assert (t.batch_size, t.lr, t.weight_decay, t.patience) == (8, 5e-5, 1e-4, 50)


def test_unknown_keys_name_the_closest():
    with pytest.raises(RecipeError, match="did you mean 'epochs'"):
        recipe_from_dict({"train": {"epoch": 3}})
    with pytest.raises(RecipeError, match="did you mean 'hidden'"):
        recipe_from_dict({"model": {"name": "egnn", "hiden": 3}})
    with pytest.raises(RecipeError, match="unknown model 'egn'.*'egnn'"):
        recipe_from_dict({"model": {"name": "egn"}})
    with pytest.raises(RecipeError, match="section 'trian'.*'train'"):
        recipe_from_dict({"trian": {}})
    with pytest.raises(RecipeError, match="must be an integer"):
        recipe_from_dict({"train": {"epochs": "ten"}})


def test_overrides_parse_toml_values():
    raw = apply_overrides({"train": {}}, ["train.lr=1e-3", "model.name=linear", "train.amp=true", "data.path=a/b"])
    assert raw["train"]["lr"] == 1e-3 and raw["train"]["amp"] is True
    assert raw["model"]["name"] == "linear" and raw["data"]["path"] == "a/b"
    with pytest.raises(RecipeError, match="section.key=value"):
        apply_overrides({}, ["lr=3"])


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs=")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)


def test_base_recipes_merge(tmp_path):
    (tmp_path / "base.toml").write_text('[model]\nname = "egnn"\nhidden = 32\n[train]\nepochs = 7\nlr = 1e-3\n')
    (tmp_path / "child.toml").write_text('base = "base.toml"\nname = "child"\n[train]\nepochs = 9\n')
    recipe, _ = load_recipe(tmp_path / "child.toml")
    assert (recipe.name, recipe.train.epochs, recipe.train.lr, recipe.model.params["hidden"]) == ("child", 9, 1e-3, 32)
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(RecipeError, match="includes itself"):
        load_recipe(tmp_path / "loop.toml")
