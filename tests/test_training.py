"""The shared training helpers and loop: loader, normalisation, checkpoint refusal, NaN."""
import os
import signal

import pytest
import torch
from torch import nn

from dfkd.errors import DfkdError
from dfkd.device import pick_device
from dfkd.training import (
    TensorLoader, derive_seed, fit, make_optimizer, make_scheduler, normalize, training_config,
)


def test_loader_covers_every_row_once_and_repeats():
    rows = torch.arange(103)
    loader = TensorLoader([rows, rows * 2], batch_size=10, seed=3)
    assert len(loader) == 11
    epoch0 = [batch for _, batch in loader.batches(0)]
    seen = torch.cat([a for a, _ in epoch0])
    assert torch.equal(seen.sort().values, rows)
    assert all(torch.equal(b, a * 2) for a, b in epoch0)  # tensors stay aligned
    again = TensorLoader([rows, rows * 2], batch_size=10, seed=3)
    assert torch.equal(torch.cat([a for (_, (a, _)) in again.batches(0)]), seen)
    assert not torch.equal(torch.cat([a for (_, (a, _)) in again.batches(1)]), seen)
    assert not torch.equal(TensorLoader([rows], 10, seed=4).order(0), loader.order(0))
    tail = [step for step, _ in loader.batches(0, start=7)]
    assert tail == [7, 8, 9, 10]


def test_loader_merges_a_last_batch_of_one():
    loader = TensorLoader([torch.arange(21)], batch_size=10, seed=0)
    sizes = [len(batch[0]) for _, batch in loader.batches(0)]
    assert sizes == [10, 11]


def test_normalize():
    x = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    y = normalize(x, [0.5], [0.25])
    assert y.dtype == torch.float32
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([-2.0, 2.0]))
    rgb = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = normalize(rgb, [0.0, 0.5, 1.0], [1.0, 0.5, 0.25])
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([1.0, 1.0, 0.0]))
    assert normalize(rgb, [0.5], [0.5]).shape == (1, 3, 2, 2)
    with pytest.raises(DfkdError, match="one per channel"):
        normalize(rgb, [0.5, 0.5], [0.5])


def test_derive_seed_and_device():
    assert derive_seed(1, "step", 0, 3) == derive_seed(1, "step", 0, 3) != derive_seed(1, "step", 0, 4)
    assert pick_device().type in ("cpu", "cuda")


def test_training_config_fills_defaults_and_refuses_unknown():
    cfg = training_config({"arch": "lenet5", "optimizer": {"lr": 0.1}}, "teacher")
    assert cfg["optimizer"] == {"name": "adam", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}
    assert cfg["augment"]["flip"] is False and cfg["epochs"] == 10
    with pytest.raises(DfkdError, match="epoch"):
        training_config({"arch": "lenet5", "epoch": 3}, "teacher")
    with pytest.raises(DfkdError, match="arch"):
        training_config({}, "student")


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine"])
def test_optimizers_and_schedules(name, schedule):
    model = nn.Linear(3, 2)
    opt = training_config({"arch": "x", "optimizer": {"name": name, "lr": 0.1}}, "t")["optimizer"]
    optimizer = make_optimizer(model, opt)
    scheduler = make_scheduler(optimizer, schedule, 0.1, total_steps=10)
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert max(lrs) <= 0.1 + 1e-9
    assert (lrs[-1] == 0.1) == (schedule == "constant")


def _toy_fit(tmp_path, identity, loss_scale=1.0, epochs=2, on_step=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2))  # dropout: the global RNG
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    loader = TensorLoader([x, y], batch_size=8, seed=0)

    def step_loss(batch, generator):
        xb, yb = batch
        scale = loss_scale(generator) if callable(loss_scale) else loss_scale
        return nn.functional.cross_entropy(model(xb), yb) * scale

    cfg = training_config({"arch": "toy", "epochs": epochs, "batch_size": 8, "schedule": "cosine", "amp": False}, "t")
    return fit(model, loader, step_loss, lambda: {"accuracy": 0.5}, cfg, identity, tmp_path,
               name="toy", nan_hint="Lower toy.lr.", on_step=on_step), model


def test_fit_logs_and_refuses_a_foreign_checkpoint(tmp_path):
    result, _ = _toy_fit(tmp_path, {"stage": "toy", "config": {"lr": 1}})
    assert [row["epoch"] for row in result.log] == [1, 2] and result.images == 80
    assert (tmp_path / "checkpoint.pt").exists()
    again, _ = _toy_fit(tmp_path, {"stage": "toy", "config": {"lr": 1}})  # complete: resumes, trains nothing
    assert again.log == result.log
    with pytest.raises(DfkdError, match=r"checkpoint.pt.*config.lr: 1 -> 2.*Delete it"):
        _toy_fit(tmp_path, {"stage": "toy", "config": {"lr": 2}})


def test_nan_loss_names_epoch_step_and_fix(tmp_path):
    calls = []

    def scale(generator):  # NaN from the 3rd step on
        calls.append(1)
        return float("nan") if len(calls) >= 3 else 1.0

    with pytest.raises(DfkdError, match=r"epoch 1, step 3 of 5.*Lower toy.lr"):
        _toy_fit(tmp_path, {"stage": "toy"}, loss_scale=scale)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_sigterm_resume_restores_the_global_rng_for_dropout(tmp_path):
    _, reference = _toy_fit(tmp_path / "a", {"stage": "toy"}, epochs=3)

    def term(epoch, step):
        if (epoch, step) == (1, 2):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        _toy_fit(tmp_path / "b", {"stage": "toy"}, epochs=3, on_step=term)
    assert stopped.value.code == 143
    _, resumed = _toy_fit(tmp_path / "b", {"stage": "toy"}, epochs=3)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
