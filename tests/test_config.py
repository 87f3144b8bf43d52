"""Config validation: defaults filled, every mistake named by its key, slices per stage."""
import copy

import pytest

from dfkd import config as dc
from dfkd.io import layout
from dfkd import slices
from dfkd.errors import DfkdError

from conftest import REPO, tiny_config


def test_default_config_is_valid_and_defaults_filled():
    config = dc.load_config(REPO / "config.yaml")
    assert config["run_targets"] == ["fmnist"]
    teacher = config["targets"]["fmnist"]["teacher"]
    assert teacher["augment"]["rotate"] == 0  # filled from the schema's default
    assert config["transfer_sets"]["noise_bal"]["balanced"] is True


def assert_named(config, mutate, fragment):
    """After `mutate`, validation fails with a message that holds `fragment`."""
    mutate(config)
    with pytest.raises(DfkdError) as info:
        dc.validate_config(config)
    assert fragment in str(info.value)


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
    assert_named(tiny_config(), mutate, fragment)


def test_validation_does_not_modify_its_input():
    config = tiny_config()
    before = copy.deepcopy(config)
    dc.validate_config(config)
    assert config == before


def test_slices_hold_only_what_each_stage_reads():
    config = dc.validate_config(tiny_config())
    prep = slices.prepare_slice(config, "fmnist", "noise")
    assert prep["source"] == config["sources"]["noise"] and prep["split"] is None
    assert slices.prepare_slice(config, "fmnist", "test")["split"] == "test"
    assert "student" not in slices.teacher_slice(config, "fmnist")
    assert "teacher" not in slices.student_slice(config, "fmnist")
    recipe = slices.assemble_slice(config, "fmnist", "synthetic_bal")
    assert recipe["sources"] == ["shapes", "strokes"] and recipe["per_class"] == 60
    assert slices.as_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_load_config_reports_bad_yaml(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("targets: [unclosed\n")
    with pytest.raises(DfkdError, match="not valid YAML"):
        dc.load_config(bad)
    with pytest.raises(DfkdError, match="not found"):
        dc.load_config(tmp_path / "missing.yaml")


def study_config():
    config = tiny_config()
    config["variants"] = {"noaug": {"augment": {}}}
    config["study"] = {"targets": ["fmnist"], "tables": {
        "main": {"rows": {"noise": "noise", "natural_bal": "natural_bal"}, "variants": ["default", "noaug"]},
        "table9": {"rows": {"noise": "noise"}},
    }}
    return config


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c["study"]["tables"]["main"]["rows"].update(x="nope"), "study.tables.main.rows.x: 'nope' is not a defined transfer set"),
        (lambda c: c["study"]["tables"]["main"].update(variants=["fast"]), "study.tables.main.variants: 'fast' is not defined under variants"),
        (lambda c: c["study"].update(targets=["cifar"]), "study.targets: 'cifar' is not defined"),
        (lambda c: c["study"].update(targets=[]), "declares tables but no target"),
        (lambda c: c["study"]["tables"].update(table7={"rows": {"a": "noise"}}), "study.tables: Additional properties are not allowed ('table7'"),
        (lambda c: c["study"]["tables"]["table9"]["rows"].update({2: "noise"}), "study.tables.table9.rows"),
        (lambda c: c["variants"].update(default={}), "variants"),
        (lambda c: c["variants"].update(slow={"lr": 0.1}), "variants.slow"),
        (lambda c: c["variants"].update(slow={"epochs": 0}), "variants.slow (on targets.fmnist.student).epochs"),
    ],
)
def test_study_and_variant_mistakes_are_named(mutate, fragment):
    assert_named(study_config(), mutate, fragment)


def test_variants_replace_whole_student_keys_and_runs_name_them():
    config = dc.validate_config(study_config())
    plain = slices.student_slice(config, "fmnist")
    noaug = slices.student_slice(config, "fmnist", "noaug")
    assert plain["student"]["augment"]["flip"] is True and noaug["student"]["augment"]["flip"] is False
    assert {k: v for k, v in noaug["student"].items() if k != "augment"} == {k: v for k, v in plain["student"].items() if k != "augment"}
    assert layout.run_name("natural_bal") == "natural_bal" and layout.run_name("natural_bal", "noaug") == "natural_bal.noaug"
    assert layout.parse_run("natural_bal.noaug") == ("natural_bal", "noaug") and layout.parse_run("noise") == ("noise", "default")
    with pytest.raises(DfkdError, match="variant 'fast' is not defined"):
        slices.student_slice(config, "fmnist", "fast")


def test_study_table_slice_lists_rows_in_config_order_with_recipes():
    config = dc.validate_config(study_config())
    table = slices.study_table_slice(config, "fmnist", "main")
    assert [r["row"] for r in table["rows"]] == ["noise", "natural_bal"]
    assert table["rows"][1]["recipe"] == slices.assemble_slice(config, "fmnist", "natural_bal")
    assert table["dataset"] == "FMNIST" and table["variants"] == ["default", "noaug"]
    assert config["study"]["tables"]["table9"]["variants"] == ["default"]  # schema default


def merged_with_preset(name: str) -> dict:
    """config.yaml with `--configfile presets/{name}` as Snakemake merges it (nested keys update,
    not replace), validated."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "presets" / name).read_text()))
    return dc.validate_config(config)


def test_full_preset_merges_over_the_default_config_into_a_valid_one():
    """`--configfile presets/full.yaml` as Snakemake merges it (nested keys update, not replace)."""
    valid = merged_with_preset("full.yaml")
    assert valid["targets"]["fmnist"]["student"]["epochs"] == 100
    assert valid["targets"]["fmnist"]["student"]["temperature"] == 20  # kept from config.yaml
    assert valid["study"]["targets"] == ["fmnist", "cifar10"] and "table4" in valid["study"]["tables"]


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "presets").glob("*.yaml")))
def test_every_preset_merges_over_the_default_config_into_a_valid_one(preset):
    valid = merged_with_preset(preset)
    assert set(valid["run_targets"]) <= set(valid["targets"])


def test_the_batchnorm_synthesis_preset_plans_inversion_on_the_batchnorm_teacher():
    valid = merged_with_preset("bn_synthesis.yaml")
    assert valid["run_targets"] == ["fmnist_bn"]
    assert valid["targets"]["fmnist_bn"]["teacher"]["arch"] == "lenet5_bn"
    assert set(valid["study"]["tables"]["synthesis"]["rows"]) == {"noise_bal", "natural_bal", "impressions", "inversion",
                                                                     "natural_bal_inv", "synthetic_bal",
                                                                     "synthetic_bal_inv"}
    assert valid["study"]["tables"]["synthesis"]["variants"] == ["default", "strong"]
    assert valid["transfer_sets"]["natural_bal_inv"]["sources"] == ["patches", "patches_pool", "digits", "inv_fill"]


def test_tuning_preset_adds_variants_that_validate():
    valid = merged_with_preset("tuning.yaml")
    assert valid["variants"]["noaug"] == {"augment": {}}  # the config's own variant stays
    assert slices.student_slice(valid, "fmnist", "noaug_t4")["student"]["temperature"] == 4


def test_a_replicate_seed_changes_only_the_seeds():
    """Seed k adds k to the student's and the recipe's seeds, and changes nothing else."""
    valid = dc.load_config(REPO / "config.yaml", REPO / "presets" / "seeds.yaml")
    assert slices.replicate_seeds(valid) == [0, 1, 2, 3, 4]
    default = slices.student_slice(valid, "fmnist", "default")["student"]
    recipe = slices.assemble_slice(valid, "fmnist", "natural_bal")
    for k in (1, 4):
        assert slices.student_slice(valid, "fmnist", "default", k)["student"] == {**default, "seed": default["seed"] + k}
        assert slices.student_slice(valid, "fmnist", "noaug", k)["student"]["seed"] == default["seed"] + k
        assert slices.assemble_slice(valid, "fmnist", "natural_bal", k) == {**recipe, "seed": recipe["seed"] + k}


def test_seeds_must_be_distinct_and_nonnegative():
    for bad in ([], [0, 0], [-1], ["a"]):
        config = dc.load_config(REPO / "config.yaml")
        config["seeds"] = bad
        with pytest.raises(DfkdError, match="seeds"):
            dc.validate_config(config)


# ---------------------------------------------------------------------------- cross-field rules (issue 18)
def fmnist_set(**recipe):
    """A mutation adding transfer set `x` (built by every target) with `recipe`."""
    return lambda c: c["transfer_sets"].update(x={"sources": ["noise"], **recipe})


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (fmnist_set(classes=20), "transfer_sets.x.classes: 20 exceeds targets.fmnist.num_classes=10"),
        (fmnist_set(classes=4, size=3), "transfer_sets.x.size: 3 rows cannot give each of the 4 kept classes"),
        (fmnist_set(size=100, per_class=5), "transfer_sets.x: size fixes the set's total and replaces per_class"),
        (fmnist_set(balanced=False, per_class=5), "transfer_sets.x.per_class: has no effect on an unbalanced set"),
        (lambda c: c["transfer_sets"].update(x={"sources": ["noise", "shapes"], "balanced": False}),
         "an unbalanced set draws on its first source alone, so ['shapes'] would never be used"),
        (fmnist_set(per_class=100, total=500), "per_class=100 x 10 classes exceeds total=500"),
        (lambda c: c["targets"]["fmnist"]["dataset"].update(name="CIFAR100"),
         "targets.fmnist.num_classes: 10, but its dataset (CIFAR100) has 100 classes"),
        (lambda c: c["targets"]["fmnist"].update(dataset={"kind": "noise"}), "targets.fmnist.dataset: kind 'noise' gives no labels"),
        (lambda c: c["targets"]["fmnist"]["teacher"].update(augment={"scale": [1.2, 0.8]}),
         "targets.fmnist.teacher.augment.scale: [1.2, 0.8] needs [min, max] with min <= max"),
        (lambda c: c.update(variants={"zoom": {"augment": {"scale": [2, 1]}}}), "variants.zoom.augment.scale"),
        (lambda c: c["targets"]["fmnist"]["student"].update(min_accuracy=0.5), "targets.fmnist.student.min_accuracy: applies to teachers only"),
        (lambda c: c["targets"]["fmnist"]["teacher"].update(min_accuracy=1.5), "targets.fmnist.teacher.min_accuracy"),
    ],
)
def test_cross_field_mistakes_are_named_at_validation(mutate, fragment):
    assert_named(tiny_config(), mutate, fragment)


def test_a_set_only_other_targets_build_is_checked_against_them_only():
    config = tiny_config()
    config["targets"]["fmnist"]["num_classes"] = 4  # dataset has 10: refused on its own ...
    config["targets"]["fmnist"]["dataset"] = {"kind": "imagefolder", "root": "photos"}  # ... unless not known
    config["transfer_sets"]["x"] = {"sources": ["noise"], "classes": 8}
    config["targets"]["fmnist"]["sets"] = ["real", "noise"]  # fmnist (4 classes) does not build x
    dc.validate_config(config)
    config["targets"]["fmnist"]["sets"].append("x")
    with pytest.raises(DfkdError, match="transfer_sets.x.classes: 8 exceeds targets.fmnist.num_classes=4"):
        dc.validate_config(config)


def test_code_defaults_are_the_schemas():
    """Defaults live only in the schema: the code that fills a block given by hand reads them there."""
    from dfkd.augment import AUGMENT_DEFAULTS
    from dfkd.schema import load_schema, schema_default
    from dfkd.stages.teacher import DEFAULT_MIN_ACCURACY
    from dfkd.training import TRAINING_DEFAULTS

    defs = load_schema()["$defs"]
    assert TRAINING_DEFAULTS["epochs"] == defs["training"]["properties"]["epochs"]["default"]
    assert TRAINING_DEFAULTS["optimizer"]["lr"] == defs["optimizer"]["properties"]["lr"]["default"]
    assert AUGMENT_DEFAULTS["cutmix"] == {"p": 0.0, "alpha": 1.0} and AUGMENT_DEFAULTS["flip"] is False
    assert "load" not in TRAINING_DEFAULTS and "arch" not in TRAINING_DEFAULTS
    assert DEFAULT_MIN_ACCURACY == 0.5 and schema_default("study", "min_effect") == 1.0
