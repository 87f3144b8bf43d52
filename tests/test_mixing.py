"""Mixup and CutMix (dfkd.augment.mix_batch): shapes, seeding, what a mixed image is made of,
the config's checks, the teacher labelling the very images the student sees (online, or only the
mixed ones beside per-view logits), bitwise resume."""
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import assert_same_weights, tiny_split, write_tiny_splits
from dfkd.io.artifacts import load_torch, write_h5, write_parquet
from dfkd.augment import (
    VIEW_FLIP, VIEW_MIXED, augment_active, augment_batch, augment_batch_with_views, augment_config, mix_batch,
    mix_batch_with_mask, mixing_active, unmixed_view_codes, view_codes,
)
from dfkd.schema import definition_schema, schema_errors
from dfkd.stages.distill import distill_student, kd_loss, kd_step_loss
from dfkd.errors import DfkdError
from dfkd.stages.teacher import train_teacher
from dfkd.training import make_generator, model_input, predict_view_logits, to_unit, training_config

MIXUP = {"mixup": {"p": 1.0, "alpha": 0.4}}
CUTMIX = {"cutmix": {"p": 1.0, "alpha": 1.0}}
BOTH = {"mixup": {"p": 0.5, "alpha": 0.4}, "cutmix": {"p": 0.5, "alpha": 1.0}}


def constant_images(n: int, size: int = 8, dtype=torch.float32) -> torch.Tensor:
    """Image i is the constant i / n: a mixed pixel tells whose it is."""
    return (torch.arange(n, dtype=dtype) / n).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- the batch function
@pytest.mark.parametrize("cfg", [MIXUP, CUTMIX, BOTH, {**BOTH, "flip": True, "translate": 0.1, "noise": 0.05}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixing_keeps_shape_dtype_and_range(cfg, dtype):
    x = torch.rand(16, 3, 12, 12, generator=generator(0), dtype=dtype)
    y = augment_batch(x, cfg, generator(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)


@pytest.mark.parametrize("cfg", [MIXUP, CUTMIX, BOTH])
def test_mixing_is_seeded(cfg):
    x = torch.rand(32, 1, 16, 16, generator=generator(0))
    a, b = mix_batch(x, cfg, generator(5)), mix_batch(x, cfg, generator(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, mix_batch(x, cfg, generator(6)))


def test_mixing_off_returns_the_batch_itself():
    x = torch.rand(4, 1, 8, 8)
    assert mix_batch(x, {}, generator(0)) is x
    assert mix_batch(x, {"mixup": {"p": 0.0, "alpha": 0.2}}, generator(0)) is x


def test_mixup_blends_each_image_with_another_one():
    n = 64
    x = constant_images(n, dtype=torch.float64)
    y = mix_batch(x, {"mixup": {"p": 1.0, "alpha": 1.0}}, generator(0))
    values = y[:, 0, 0, 0]
    assert (y == values.view(n, 1, 1, 1)).all()  # a blend of two constant images is constant
    own = torch.arange(n, dtype=torch.float64) / n
    assert (values != own).all()  # a partner is never the image itself
    # value = lam * own + (1 - lam) * partner's: some partner j gives lam in [0, 1]
    lam = (values.view(n, 1) - own.view(1, n)) / (own.view(n, 1) - own.view(1, n))  # (n, n): lam if j is the partner
    fits = ((lam >= 0) & (lam <= 1)).fill_diagonal_(False)
    assert fits.any(1).all()


def test_cutmix_pastes_a_rectangle_of_one_other_image():
    n = 64
    x = constant_images(n, size=16)
    y = mix_batch(x, CUTMIX, generator(0))
    areas = []
    for i in range(n):
        pasted = y[i, 0] != x[i, 0]  # (H, W)
        if pasted.any():
            assert len(torch.unique(y[i, 0][pasted])) == 1  # from one partner
            rows, cols = pasted.any(1), pasted.any(0)
            assert torch.equal(pasted, rows.view(-1, 1) & cols.view(1, -1))  # a rectangle
        areas.append(float(pasted.float().mean()))
    assert sum(a > 0 for a in areas) > n // 2  # most images got a box (area 0 only when lam rounds to 1)
    assert 0.15 < np.mean(areas) < 0.5  # E[1 - lam] = 0.5 for alpha 1, less after clipping


def test_p_is_the_share_of_mixed_images_and_an_image_is_mixed_once():
    n = 4000
    x = constant_images(n, size=4)
    cfg = {"mixup": {"p": 0.3, "alpha": 1.0}, "cutmix": {"p": 0.2, "alpha": 1.0}}
    y = mix_batch(x, cfg, generator(0))
    changed = (y != x).flatten(1)  # (n, 16)
    blended = changed.all(1)  # mixup changes every pixel
    boxed = changed.any(1) & ~blended  # CutMix changes a box (rarely the whole image)
    assert abs(float(blended.float().mean()) - 0.3) < 0.04
    assert abs(float(boxed.float().mean()) - 0.2) < 0.04
    assert abs(float((~changed.any(1)).float().mean()) - 0.5) < 0.04  # the others stay exactly as they were


# ---------------------------------------------------------------------------- config
def test_mixing_config_defaults_and_activity():
    cfg = augment_config({"mixup": {"p": 0.5}})
    assert cfg["mixup"] == {"p": 0.5, "alpha": 1.0} and cfg["cutmix"] == {"p": 0.0, "alpha": 1.0}
    assert augment_config(cfg) == cfg  # idempotent
    assert mixing_active(cfg) and augment_active(cfg)
    off = {"mixup": {"p": 0, "alpha": 0.2}, "cutmix": {"alpha": 3}}
    assert not mixing_active(off) and not augment_active(off)
    assert view_codes({"flip": True, **off}) == [0, 1]
    assert view_codes({"flip": True, "mixup": {"p": 0.1}}) is None  # mixing: the teacher labels online
    assert view_codes({"cutmix": {"p": 1}}) is None


@pytest.mark.parametrize("block, match", [
    ({"mixup": {"p": 1.5}}, r"augment\.mixup\.p must be in \[0, 1\].*; got 1.5"),
    ({"cutmix": {"p": -0.1}}, r"augment\.cutmix\.p must be in \[0, 1\]"),
    ({"mixup": {"p": 0.5, "alpha": 0}}, r"augment\.mixup\.alpha must be > 0.*got 0.0"),
    ({"cutmix": {"alpha": -1}}, r"augment\.cutmix\.alpha must be > 0"),
    ({"mixup": {"p": "half"}}, r"augment\.mixup\.p must be a finite number; got 'half'"),
    ({"mixup": {"p": True}}, r"augment\.mixup\.p must be a finite number"),
    ({"cutmix": {"alpha": float("nan")}}, r"augment\.cutmix\.alpha must be a finite number"),
    ({"mixup": {"p": 0.5, "beta": 1}}, r"augment\.mixup: unknown option\(s\) \['beta'\]"),
    ({"mixup": 0.5}, r"augment\.mixup must be a mapping"),
    ({"mixup": {"p": 0.7}, "cutmix": {"p": 0.4}}, r"mixup\.p \+ augment\.cutmix\.p must be at most 1"),
    ({"mixing": {"p": 0.5}}, r"unknown augment option\(s\) \['mixing'\]"),
])
def test_mixing_config_errors_name_the_key(block, match):
    with pytest.raises(DfkdError, match=match):
        augment_config(block)


def test_schema_checks_the_mixing_keys():
    schema = definition_schema("augment")
    good = {"flip": True, "mixup": {"p": 0.5}, "cutmix": {"alpha": 0.5}}
    assert schema_errors(good, schema) == []
    assert good["mixup"] == {"p": 0.5, "alpha": 1.0} and good["cutmix"] == {"p": 0.0, "alpha": 0.5}  # filled
    absent = {"flip": True}
    assert schema_errors(absent, schema) == [] and "mixup" not in absent  # off, and no params change
    for block, where in [({"mixup": {"p": 2}}, "mixup.p"), ({"cutmix": {"alpha": 0}}, "cutmix.alpha"),
                         ({"mixup": {"p": 0.5, "lam": 1}}, "mixup"), ({"cutmix": "yes"}, "cutmix")]:
        errors = schema_errors(block, schema, "student.augment")
        assert len(errors) == 1 and errors[0].startswith(f"student.augment.{where}:"), errors


def test_teacher_refuses_mixing_and_student_accepts_it():
    block = {"arch": "lenet5", "augment": {"cutmix": {"p": 0.5}}}
    assert training_config(block, "student")["augment"]["cutmix"] == {"p": 0.5, "alpha": 1.0}
    with pytest.raises(DfkdError, match="teacher.augment: mixup and cutmix are for students only"):
        training_config(block, "teacher")
    training_config({"arch": "lenet5", "augment": {"cutmix": {"p": 0}}}, "teacher")  # off: fine


@pytest.mark.parametrize("cfg", [{"mixup": {"p": 0.5, "alpha": 0.4}}, {"cutmix": {"p": 0.5, "alpha": 1.0}},
                                 {"mixup": {"p": 0.3, "alpha": 0.4}, "cutmix": {"p": 0.3, "alpha": 1.0}}])
def test_the_mask_names_the_mixed_images_and_the_views_the_rest(cfg):
    x = constant_images(64)
    mixed, mask = mix_batch_with_mask(x, cfg, generator(4))
    assert torch.equal(mixed, mix_batch(x, cfg, generator(4)))  # the same draws
    assert mask.dtype == torch.bool and 0 < int(mask.sum()) < 64
    changed = (mixed != x).flatten(1).any(1)
    assert not changed[~mask].any()  # an image left out is untouched
    assert changed[mask].float().mean() > 0.9  # nearly all chosen ones changed (a CutMix box may round away)
    flipped = {**cfg, "flip": True}
    y, code = augment_batch_with_views(x, flipped, generator(4))
    assert torch.equal(y, augment_batch(x, flipped, generator(4)))
    is_mixed = code & VIEW_MIXED != 0
    assert is_mixed.any() and (~is_mixed).any()
    for c in (0, VIEW_FLIP):  # every unmixed image is exactly its view of the original
        rows = (code == c).nonzero().squeeze(1)
        assert torch.equal(y[rows], x[rows].flip(-1) if c else x[rows])


def test_unmixed_view_codes_only_beside_mixing_and_views():
    assert unmixed_view_codes({"flip": True, **BOTH}) == [0, VIEW_FLIP]
    assert unmixed_view_codes(CUTMIX) == [0]  # nothing else on: an unmixed image is its row
    assert unmixed_view_codes({"flip": True, "rotate": 10, **BOTH}) is None  # continuous: all online
    assert unmixed_view_codes({"flip": True}) is None  # no mixing: plain view_codes apply
    assert view_codes({"flip": True, **BOTH}) is None


# ---------------------------------------------------------------------------- the teacher's targets
class Recording(nn.Module):
    """A linear classifier that keeps every input it is given."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(64, 4)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.head(x.flatten(1))


@pytest.mark.parametrize("cfg", [MIXUP, CUTMIX, {**BOTH, "flip": True, "rotate": 10}])
def test_teacher_labels_the_mixed_images_the_student_sees(cfg):
    images = torch.from_numpy(tiny_split(32, 0)[0][:, :, :8, :8].copy())  # (32, 1, 8, 8) uint8
    student, teacher = Recording(0), Recording(1).requires_grad_(False)
    s_norm, t_norm = ([0.5], [0.5]), ([0.2], [0.3])  # different normalisations, as a real teacher may have
    step_loss = kd_step_loss(student, teacher, cfg, 4.0, s_norm, t_norm, cached=False)
    loss = step_loss((images,), make_generator("cpu", 0, "step", 0, 0))
    (s_in,), (t_in,) = student.seen, teacher.seen
    # the same [0, 1] images, each normalised its own way
    torch.testing.assert_close(s_in * 0.5 + 0.5, t_in * 0.3 + 0.2, rtol=0, atol=1e-6)
    mixed = augment_batch(to_unit(images), cfg, make_generator("cpu", 0, "step", 0, 0))
    assert torch.equal(s_in, model_input(mixed, *s_norm)) and torch.equal(t_in, model_input(mixed, *t_norm))
    assert not torch.equal(mixed, augment_batch(to_unit(images), {**cfg, "mixup": {}, "cutmix": {}},
                                                make_generator("cpu", 0, "step", 0, 0)))  # it did mix
    # the loss is the KD loss on those outputs alone
    with torch.no_grad():
        expected = kd_loss(student.head(s_in.flatten(1)), teacher.head(t_in.flatten(1)), 4.0)
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.parametrize("cfg", [{"flip": True, "cutmix": {"p": 0.5, "alpha": 1.0}},
                                 {"flip": True, "mixup": {"p": 0.3, "alpha": 0.4}, "cutmix": {"p": 0.3, "alpha": 1.0}},
                                 {"mixup": {"p": 0.3, "alpha": 0.4}}])
def test_beside_per_view_logits_the_teacher_labels_only_the_mixed_images(cfg):
    images = torch.from_numpy(tiny_split(32, 0)[0][:, :, :8, :8].copy())  # (32, 1, 8, 8) uint8
    student, teacher = Recording(0), Recording(1).requires_grad_(False)
    s_norm, t_norm = ([0.5], [0.5]), ([0.2], [0.3])
    views = unmixed_view_codes(cfg)
    logits = predict_view_logits(teacher, images, views, *t_norm)  # (32, V, 4)
    teacher.seen.clear()
    step_loss = kd_step_loss(student, teacher, cfg, 4.0, s_norm, t_norm, cached=True, views=views)
    loss = step_loss((images, logits), make_generator("cpu", 0, "step", 0, 0))
    (s_in,), (t_in,) = student.seen, teacher.seen
    x, code = augment_batch_with_views(to_unit(images), cfg, make_generator("cpu", 0, "step", 0, 0))
    mixed = code & VIEW_MIXED != 0
    assert 0 < int(mixed.sum()) < 32
    assert torch.equal(s_in, model_input(x, *s_norm))  # the student sees every image, mixed or not
    assert torch.equal(t_in, model_input(x[mixed], *t_norm))  # the teacher, only the mixed ones
    # the targets are the teacher's outputs on what the student saw, for every image
    with torch.no_grad():
        expected = kd_loss(student.head(s_in.flatten(1)), teacher.head(model_input(x, *t_norm).flatten(1)), 4.0)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- distillation runs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A briefly trained teacher, the train split as the only source, its features, a manifest."""
    root = tmp_path_factory.mktemp("mixing")
    files = write_tiny_splits(root, (("train", 240, 0), ("test", 80, 1)))
    target = {"channels": 1, "image_size": 32, "num_classes": 4, "mean": [0.5], "std": [0.5],
              "teacher": {"arch": "lenet5", "epochs": 1, "batch_size": 64, "optimizer": {"lr": 3e-3},
                          "schedule": "constant", "seed": 0, "amp": False}}
    train_teacher(files["train"], files["test"], target, root / "teacher")
    features = root / "features_train.h5"  # wrong on purpose: mixing must never read cached logits
    write_h5(features, {"features": np.zeros((240, 8), np.float32), "logits": np.zeros((240, 4), np.float32)}, None)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"source": ["train"] * 200, "index": rng.permutation(240)[:200],
                          "label": rng.integers(0, 4, 200), "confidence": rng.random(200)})
    write_parquet(root / "transfer.parquet", frame, None)
    return {"files": files, "target": target, "teacher": root / "teacher" / "model.pt",
            "manifest": root / "transfer.parquet", "features": {"train": features}}


def run(world, out, augment, **kwargs):
    block = {"arch": "lenet5_half", "epochs": 2, "batch_size": 50, "optimizer": {"name": "adam", "lr": 3e-3},
             "schedule": "onecycle", "temperature": 4.0, "augment": augment, "seed": 1, "amp": False}
    return distill_student(world["teacher"], world["manifest"], {"train": world["files"]["train"]},
                           world["features"], world["files"]["test"], {**world["target"], "student": block},
                           out, **kwargs)


def test_resume_with_mixing_is_bitwise_identical(world, tmp_path):
    augment = {"flip": True, "mixup": {"p": 0.3, "alpha": 0.4}, "cutmix": {"p": 0.3, "alpha": 1.0}}
    reference = run(world, tmp_path / "reference", augment)
    assert reference["teacher_logits"] == "per_view+mixed"  # feature files given, yet the teacher labels mixes

    def term(epoch, step):
        if (epoch, step) == (1, 1):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run(world, tmp_path / "resumed", augment, on_step=term)
    assert stopped.value.code == 143
    resumed = run(world, tmp_path / "resumed", augment)
    assert_same_weights(tmp_path / "reference" / "model.pt", tmp_path / "resumed" / "model.pt")
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    run(world, tmp_path / "other", {"flip": True, "mixup": {"p": 0.5, "alpha": 0.4}})  # one mix changed
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "reference" / "model.pt", tmp_path / "other" / "model.pt")


def test_per_view_plus_mixed_equals_the_online_teacher(world, tmp_path, monkeypatch):
    """Flips and CutMix: the unmixed images take precomputed per-view logits, and the student
    learns what it would with the teacher labelling every image online (same images, same draws)."""
    augment = {"flip": True, "cutmix": {"p": 0.5, "alpha": 1.0}}
    fast = run(world, tmp_path / "fast", augment)
    assert fast["teacher_logits"] == "per_view+mixed"
    monkeypatch.setattr("dfkd.stages.distill.unmixed_view_codes", lambda cfg: None)  # force the online teacher
    online = run(world, tmp_path / "online", augment)
    assert online["teacher_logits"] == "online"
    for key, value in load_torch(tmp_path / "fast" / "model.pt")["state_dict"].items():
        torch.testing.assert_close(value, load_torch(tmp_path / "online" / "model.pt")["state_dict"][key],
                                   rtol=1e-4, atol=1e-5)
