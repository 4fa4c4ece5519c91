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


def test_every_shipped_recipe_loads_by_name():
    from mdsurrogate.catalog import recipe_names

    names = recipe_names()
    assert len(names) > 90 and len(names) == len(set(names))
    tasks = {load_recipe(name)[0].task for name in names}
    assert tasks == {"propagator", "potential"}
    eghn, _ = load_recipe(packaged_recipe("adk_eghn"))
    m, t = eghn.model.params, eghn.train
    assert (m["hidden"], m["n_clusters"], m["cut_weight"], m["layers"]) == (128, 20, 2.0, 4)
    assert (t.batch_size, t.lr, t.weight_decay, t.patience) == (8, 5e-5, 1e-4, 50)


def test_propagator_defaults_keep_the_papers_protocol():
    for name in ("nbody_egnn", "mcomplex_3_3_J1_eghn", "mocap_run_eghn", "adk_eghn"):
        t = load_recipe(name)[0].train
        assert (t.schedule, t.warmup_epochs, t.ema_decay, t.grad_clip, t.dtype) == ("constant", 0, 0.0, 0.0,
                                                                                    "float32"), name


def test_derived_mcomplex_recipes():
    """mcomplex_{M}_{A}_J{J}_{model} = mcomplex_{model} + the data path (+ K = M for EGHN), for any M, A, J."""
    from mdsurrogate.catalog import ingest_command, recipe_names

    names = recipe_names()
    for m, a, j in ((3, 3, 1), (5, 5, 1), (5, 10, 1), (10, 10, 1), (3, 3, 5), (5, 5, 5), (5, 10, 5), (10, 10, 5)):
        for model in ("eghn", "egnn", "gmn", "gnn", "linear", "rf"):
            assert f"mcomplex_{m}_{a}_J{j}_{model}" in names
    base, _ = load_recipe("mcomplex_eghn")
    rec, resolved = load_recipe("mcomplex_5_10_J5_eghn")
    assert rec.name == "mcomplex_5_10_J5_eghn" and rec.data.path == "data/mcomplex_5_10_J5"
    assert rec.model.params == base.model.params | {"n_clusters": 5} and rec.train == base.train
    assert "(5, 10, 5)" in rec.description
    egnn, _ = load_recipe("mcomplex_7_4_J2_egnn")  # any configuration parses
    assert egnn.data.path == "data/mcomplex_7_4_J2" and "n_clusters" not in egnn.model.params
    assert ingest_command("mcomplex_7_4_J2_egnn") == ("mdsurrogate ingest mcomplex data/mcomplex_7_4_J2 --complexes 7 "
                                                      "--size 4 --systems 2")
    assert ingest_command("nbody_egnn") == "mdsurrogate ingest nbody data/nbody_small"
    assert load_recipe("mcomplex_3_3_J1_tfn")[0].train.lr == 1e-3  # TFN's base recipe, not EGNN's
    with pytest.raises(RecipeError, match="unknown recipe 'mcomplex_3_3_J1_fancy'"):
        load_recipe("mcomplex_3_3_J1_fancy")  # no base recipe mcomplex_fancy
    with pytest.raises(RecipeError, match="did you mean 'nbody_demo'"):
        load_recipe("nbody_dem")


def test_resolved_recipes_reload_to_the_same_recipe(tmp_path):
    """The recipe.toml a run directory gets is itself a valid recipe of the same task and settings."""
    from mdsurrogate.config import dump_toml

    for name in ("nbody_egnn", "cu_emt_potential", "mcomplex_5_5_J1_eghn"):
        rec, resolved = load_recipe(name, ["train.schedule=\"cosine\"", "train.ema_decay=0.99"])
        (tmp_path / f"{name}.toml").write_text(dump_toml(resolved))
        again, resolved_again = load_recipe(tmp_path / f"{name}.toml")
        assert again == rec and resolved_again == resolved


@pytest.mark.parametrize("train, message", [
    ({"schedule": "linear"}, "train.schedule must be one of constant, cosine, plateau"),
    ({"warmup_epochs": -1}, "train.warmup_epochs must be ≥ 0"),
    ({"ema_decay": 1.0}, r"train.ema_decay must be in \[0, 1\)"),
    ({"lr_final_ratio": 2.0}, "train.lr_final_ratio must be in"),
    ({"plateau_factor": 1.5}, "train.plateau_factor must be in"),
    ({"grad_clip": -1.0}, "train.grad_clip must be ≥ 0"),
    ({"dtype": "float16"}, "train.dtype must be 'float32' or 'float64'"),
    ({"energy_weight": 1.0}, "train.energy_weight applies to potential models only; model 'egnn' is a propagator"),
    ({"max_seconds": 60}, "the wall-clock budget is train.max_minutes"),
    ({"epochs": 0}, "train.epochs must be ≥ 1"),
    ({"eval_batch_size": 1.5}, "train.eval_batch_size must be an integer"),
])
def test_train_keys_are_validated(train, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict({"model": {"name": "egnn"}, "train": train})


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
