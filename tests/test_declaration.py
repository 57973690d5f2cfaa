"""Experiments declare themselves, and `resnetlab reproduce` is built from the declarations alone."""

from __future__ import annotations

import argparse

import pytest

from cli_runner import one_line_error
from resnetlab.cli import build_parser
from resnetlab.cli.reproduce import add_arguments, study_args, training_args
from resnetlab.experiments import experiments
from resnetlab.experiments.declaration import Experiment, arg, train_nothing


def _commands() -> dict[str, argparse.ArgumentParser]:
    reproduce = build_parser()._subparsers._group_actions[0].choices["reproduce"]
    return reproduce._subparsers._group_actions[0].choices


def test_every_declared_experiment_is_a_subcommand_in_its_order() -> None:
    declared = experiments()
    known = [
        "degradation",
        "responses",
        "gradients",
        "identity",
        "shortcuts",
        "cifar-table",
        "lesion",
        "landscape",
    ]
    assert [n for n in declared if n in known] == known
    assert list(_commands()) == list(declared)
    assert [e.order for e in declared.values()] == sorted(e.order for e in declared.values())


@pytest.mark.parametrize("name", list(experiments()))
def test_each_subcommand_has_the_shared_options_of_its_kind_then_its_own(name: str) -> None:
    experiment = experiments()[name]
    flags = [a.option_strings[0] for a in _commands()[name]._actions if a.option_strings][1:]  # not -h
    shared = [a.flag for a in (training_args(name) if experiment.trains else study_args(name))]
    own = [a.flag for a in experiment.args if a.flag not in shared]
    assert flags == shared + own
    assert all(a.options.get("help") for a in experiment.args)
    # a cost note names the work, not seconds measured on one machine
    assert " s " not in experiment.cost and "min" not in experiment.cost


def test_an_experiments_option_replaces_a_shared_one_in_its_place() -> None:
    parser = argparse.ArgumentParser()
    shared = [arg("--a", "shared a"), arg("--b", "shared b", default=1), arg("--c", "shared c")]
    own = [arg("--b", "own b", default=2), arg("--x", "x", exclusive="g"), arg("--y", "y", exclusive="g")]
    add_arguments(parser, list(({a.flag: a for a in shared} | {a.flag: a for a in own}).values()))
    assert [a.dest for a in parser._actions[1:]] == ["a", "b", "c", "x", "y"]
    assert parser.parse_args([]).b == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--x", "1", "--y", "2"])


def test_a_command_that_trains_nothing_refuses_training_options() -> None:
    given = argparse.Namespace(budget_iterations=None, budget_minutes=None, seeds=1)
    with pytest.raises(Exception, match="--seeds does not apply"):
        train_nothing(given, "--nets measures trained nets")
    train_nothing(argparse.Namespace(budget_iterations=None, budget_minutes=None, seeds=None), "x")
    err = one_line_error(["reproduce", "responses", "--nets", "x", "--seeds", "1"])
    assert "--seeds does not apply" in err


def test_the_description_carries_the_cost_only_where_there_is_one() -> None:
    def run(opts):
        return {}

    bare = Experiment("x", 1, "does x", run, section=lambda out, record: None)
    assert bare.description == "does x"
    assert (
        Experiment("x", 1, "does x", run, bare.section, cost="one pass").description
        == "does x. Cost: one pass"
    )
