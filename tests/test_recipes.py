"""Recipes: the paper's values, validation, overrides (YAML and keyword), compression to a budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resnetlab.errors import UserError
from resnetlab.recipes import RECIPES, Recipe, get_recipe, load_overrides, recipe_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_cifar_paper_is_section_4_2():
    r = get_recipe("cifar-paper")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (r.schedule, r.milestones, r.gamma, r.iterations) == ("step", (32000, 48000), 0.1, 64000)
    # Modern options are never paper defaults.
    assert (r.nesterov, r.label_smoothing, r.zero_init_residual, r.warmup_lr) == (False, 0.0, False, None)


def test_imagenet_paper_is_section_3_4():
    r = get_recipe("imagenet-paper")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (256, 0.1, 0.9, 1e-4)
    assert (r.schedule, r.gamma, r.iterations) == ("plateau", 0.1, 600_000)
    assert not r.nesterov and r.label_smoothing == 0.0


def test_every_field_has_a_unit():
    for recipe in RECIPES.values():
        rows = recipe.describe()
        assert [name for name, _, _ in rows] == [f.name for f in dataclasses.fields(Recipe)]
        assert all(unit for _, _, unit in rows)


def test_recipes_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_recipe("cifar-paper").lr = 1.0


def test_overrides_and_round_trip():
    r = get_recipe("cifar-paper", lr=0.05, milestones=[10, 20], nesterov=True, iterations=30)
    assert (r.lr, r.milestones, r.nesterov) == (0.05, (10, 20), True)
    assert Recipe.from_dict(r.to_dict()) == r
    assert get_recipe("cifar-paper", lr=1) == get_recipe("cifar-paper", lr=1.0)  # YAML ints for floats


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": -0.1}, "lr must be"),
        ({"momentum": 1.5}, "momentum"),
        ({"momentum": 0.0, "nesterov": True}, "nesterov"),
        ({"milestones": [48000, 32000]}, "increasing"),
        ({"schedule": "exponential"}, "schedule must be"),
        ({"batch_size": 0}, "batch_size"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"lr": "fast"}, "wrong type"),
        ({"nesterov": "yes"}, "wrong type"),
        ({"milestones": 32000}, "wrong type"),
        ({"learning_rate": 0.1}, "unknown recipe field 'learning_rate'"),
    ],
)
def test_bad_overrides_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        get_recipe("cifar-paper", **overrides)


def test_unknown_recipe_suggests_a_name():
    with pytest.raises(UserError, match="did you mean cifar-paper"):
        get_recipe("cifar-papr")


def test_scaled_keeps_the_shape():
    r = get_recipe("cifar-paper")
    short = r.scaled(640)
    assert short.iterations == 640 and short.milestones == (320, 480)  # 32k/64k and 48k/64k of it
    assert r.scaled(64000) is r
    odd = r.scaled(1000)
    assert odd.milestones == (500, 750)
    tiny = r.scaled(2)
    assert all(m >= 1 for m in tiny.milestones)
    with pytest.raises(UserError):
        r.scaled(0)


@pytest.mark.parametrize("model", ["resnet110", "resnet1202", "plain110"])
def test_deep_cifar_nets_get_the_warmup_rule(model):
    r = recipe_for("cifar-paper", model)
    assert r.warmup_lr == 0.01 and r.warmup_error == 0.8 and r.lr == 0.1


@pytest.mark.parametrize("name, model", [("cifar-paper", "resnet56"), ("imagenet-paper", "resnet50")])
def test_other_nets_have_no_warmup(name, model):
    assert recipe_for(name, model).warmup_lr is None


def test_warmup_can_be_switched_off():
    assert recipe_for("cifar-paper", "resnet110", warmup_lr=None).warmup_lr is None


def test_yaml_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: imagenet-paper\nlr: 0.2\nmilestones: [5, 9]\n")
    data = load_overrides(path)
    assert data == {"base": "imagenet-paper", "lr": 0.2, "milestones": [5, 9]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: [0.1\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("lrr: 0.1\n", "did you mean lr"),
        ("momentum: high\n", "wrong type"),
    ],
)
def test_bad_yaml_is_a_user_error(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_overrides(path)


def test_missing_yaml_names_the_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml"):
        load_overrides(tmp_path / "nope.yaml")


def test_a_run_config_yaml_gives_its_recipe(tmp_path):
    import yaml

    recipe = get_recipe("cifar-paper", lr=0.3, iterations=100, milestones=[50, 75])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": "resnet20", "recipe": recipe.to_dict()}))
    assert Recipe.from_dict(load_overrides(path)) == recipe


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    data = load_overrides(path)
    base = data.pop("base")
    recipe = get_recipe(base, **data)
    assert recipe.name == base


def test_cifar_fast30_is_cifar_fast_for_30_epochs_with_the_mirror_test():
    """The few-epoch recipe differs from cifar-fast only in its length and its test-time flip."""
    fast30 = get_recipe("cifar-fast30")
    assert fast30.iterations == round(30 * 50_000 / fast30.batch_size)
    assert fast30.test_flip and not get_recipe("cifar-fast").test_flip
    fast = get_recipe("cifar-fast")
    assert dataclasses.replace(fast30, name=fast.name, test_flip=False, iterations=fast.iterations) == fast
