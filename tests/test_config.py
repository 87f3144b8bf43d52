"""Config validation: defaults filled, every mistake named by its key, slices per stage."""
import copy

import pytest

from dfkd import config as dc
from dfkd.errors import DfkdError

from conftest import REPO, tiny_config


def test_default_config_is_valid_and_defaults_filled():
    config = dc.load_config(REPO / "config.yaml")
    assert config["run_targets"] == ["fmnist"]
    teacher = config["targets"]["fmnist"]["teacher"]
    assert teacher["augment"]["rotate"] == 0  # filled from the schema's default
    assert config["transfer_sets"]["noise_bal"]["balanced"] is True


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c["targets"]["fmnist"]["teacher"].update(epocs=3), "targets.fmnist.teacher: Additional properties are not allowed ('epocs'"),
        (lambda c: c["targets"]["fmnist"]["teacher"].update(epochs=0), "targets.fmnist.teacher.epochs"),
        (lambda c: c["targets"]["fmnist"]["teacher"].update(epochs="ten"), "targets.fmnist.teacher.epochs"),
        (lambda c: c["targets"]["fmnist"].update(channels=2), "targets.fmnist.channels"),
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c["sources"].update({"../evil": {"kind": "noise"}}), "../evil"),
        (lambda c: c["sources"].update({"train": {"kind": "noise"}}), "train"),
        (lambda c: c["transfer_sets"].update({"x": {"sources": ["nope"]}}), "transfer_sets.x.sources: 'nope' is not a defined source"),
        (lambda c: c["transfer_sets"].update({"x": {"sources": ["noise", "noise"]}}), "listed twice"),
        (lambda c: c.update(run_targets=["cifar10"]), "run_targets: 'cifar10' is not defined"),
        (lambda c: c["sources"]["noise"].update(cuont=5), "sources.noise"),
        (lambda c: c["sources"]["noise"].update(kind="nosie"), "sources.noise.kind"),
        (lambda c: c["targets"]["fmnist"].update(mean=[0.1, 0.2]), "targets.fmnist.mean"),
    ],
)
def test_mistakes_are_named(mutate, fragment):
    config = tiny_config()
    mutate(config)
    with pytest.raises(DfkdError) as info:
        dc.validate_config(config)
    assert fragment in str(info.value)


def test_validation_does_not_modify_its_input():
    config = tiny_config()
    before = copy.deepcopy(config)
    dc.validate_config(config)
    assert config == before


def test_slices_hold_only_what_each_stage_reads():
    config = dc.validate_config(tiny_config())
    prep = dc.prepare_slice(config, "fmnist", "noise")
    assert prep["source"] == config["sources"]["noise"] and prep["split"] is None
    assert dc.prepare_slice(config, "fmnist", "test")["split"] == "test"
    assert "student" not in dc.teacher_slice(config, "fmnist")
    assert "teacher" not in dc.student_slice(config, "fmnist")
    recipe = dc.assemble_slice(config, "fmnist", "synthetic_bal")
    assert recipe["sources"] == ["shapes", "strokes"] and recipe["per_class"] == 60
    assert dc.as_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_load_config_reports_bad_yaml(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("targets: [unclosed\n")
    with pytest.raises(DfkdError, match="not valid YAML"):
        dc.load_config(bad)
    with pytest.raises(DfkdError, match="not found"):
        dc.load_config(tmp_path / "missing.yaml")
