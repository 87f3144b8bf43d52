"""The source registry, argument schemas, and conversion to a target's spec."""

from __future__ import annotations

import numpy as np
import pytest
from jsonschema import Draft7Validator

from dfkd.errors import DfkdError
from dfkd.sources import (
    SOURCE_KINDS,
    TargetSpec,
    get_source_kind,
    load_source,
    source_arg_schema,
    source_input_files,
    validate_source_config,
)
from dfkd.sources.convert import center_crop_square, resize, to_channels, to_spec

ALL_KINDS = ["torchvision", "imagefolder", "noise", "shapes", "strokes", "patches", "digits", "fill", "impressions", "inversion"]


def test_registry_lists_every_kind():
    assert sorted(SOURCE_KINDS) == sorted(ALL_KINDS)
    with pytest.raises(DfkdError) as info:
        get_source_kind("nosie")
    assert (
        "'nosie'" in str(info.value)
        and "noise" in str(info.value)
        and "imagefolder" in str(info.value)
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_schemas_are_complete_draft7(kind):
    schema = source_arg_schema(kind)
    Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["kind"] == {
        "const": kind,
        "description": "Loader key in dfkd.sources.",
    }
    for key, prop in schema["properties"].items():
        assert prop.get("description"), key
        if key not in schema["required"]:
            assert "default" in prop, key
            # every default is itself valid
            Draft7Validator(prop).validate(prop["default"])


def test_schema_matches_the_config_schema_enum():
    import yaml
    from pathlib import Path

    import dfkd

    config_schema = yaml.safe_load(
        (Path(dfkd.__file__).parent / "schemas" / "config.schema.yaml").read_text()
    )
    enum = config_schema["$defs"]["source"]["properties"]["kind"]["enum"]
    assert sorted(enum) == sorted(SOURCE_KINDS)


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(DfkdError) as info:
        load_source({"kind": "noise", "cuont": 5}, TargetSpec(1, 8))
    message = str(info.value)
    assert "'cuont'" in message and "count" in message and "distribution" in message


def test_bad_value_names_key_and_value():
    with pytest.raises(DfkdError, match=r"key 'distribution' = \"poisson\".*uniform"):
        validate_source_config({"kind": "noise", "distribution": "poisson"})
    with pytest.raises(DfkdError, match=r"key 'count' = 0"):
        validate_source_config({"kind": "shapes", "count": 0})
    with pytest.raises(DfkdError, match=r"key 'scale/1' = \[0.1, 2\]"):
        validate_source_config({"kind": "patches", "scale": [0.1, 2]})
    with pytest.raises(DfkdError, match="'name' is a required property"):
        validate_source_config({"kind": "torchvision"})
    with pytest.raises(DfkdError, match="has no 'kind'"):
        validate_source_config({"count": 3})


def test_defaults_are_filled_without_touching_the_input():
    cfg = {"kind": "imagefolder", "root": "x"}
    kind, args = validate_source_config(cfg)
    assert cfg == {"kind": "imagefolder", "root": "x"}
    assert args["on_error"] == "error" and args["splits"] == {"train": "train", "test": "test"}
    assert args["count"] is None and args["seed"] == 0 and kind.name == "imagefolder"


def test_generators_read_no_files():
    assert source_input_files({"kind": "noise"}) == []
    assert source_input_files({"kind": "shapes"}) == []


def test_target_spec_checks():
    with pytest.raises(DfkdError, match="channels"):
        TargetSpec(channels=2, image_size=8)


# ---------------------------------------------------------------------------- conversion
def test_to_channels_luma_and_repeat():
    rgb = np.zeros((2, 3, 4, 4), np.uint8)
    rgb[:, 0] = 255  # pure red
    grey = to_channels(rgb, 1)
    assert grey.shape == (2, 1, 4, 4) and grey.dtype == np.uint8
    assert (grey == round(0.299 * 255)).all()
    back = to_channels(grey, 3)
    assert back.shape == (2, 3, 4, 4) and (back[:, 0] == back[:, 2]).all()


def test_resize_keeps_constant_images_and_antialiases():
    flat = np.full((3, 1, 30, 30), 77, np.uint8)
    assert (resize(flat, 7) == 77).all()
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[None, None]
    small = resize(checker, 8)
    assert (
        small.shape == (1, 1, 8, 8) and np.abs(small.astype(int) - 128).max() <= 2
    )  # averaged, not aliased


def test_to_spec_shapes_dtypes_and_crop():
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 12, 20), dtype=np.uint8)
    out = to_spec(images, TargetSpec(1, 6))
    assert out.shape == (5, 1, 6, 6) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert center_crop_square(images).shape == (5, 3, 12, 12)
    same = np.zeros((2, 3, 8, 8), np.uint8)
    same.setflags(write=False)
    converted = to_spec(same, TargetSpec(3, 8))
    assert converted.flags.writeable and converted.shape == (2, 3, 8, 8)
    with pytest.raises(DfkdError, match="uint8"):
        to_spec(images.astype(np.float32), TargetSpec(1, 6))
    with pytest.raises(DfkdError, match="channels"):
        to_spec(np.zeros((1, 2, 4, 4), np.uint8), TargetSpec(1, 6))


def test_resize_is_chunked(monkeypatch):
    from dfkd.sources import convert

    monkeypatch.setattr(convert, "_CHUNK_ELEMENTS", 100)
    images = np.random.default_rng(1).integers(0, 256, (7, 1, 9, 9), dtype=np.uint8)
    chunked = resize(images, 5)
    monkeypatch.setattr(convert, "_CHUNK_ELEMENTS", 1 << 24)
    np.testing.assert_array_equal(chunked, resize(images, 5))
