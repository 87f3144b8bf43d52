"""Generator `inversion` (DeepInversion, issue 27) on a tiny BatchNorm teacher: the batch statistics
move to the stored ones, the teacher sees the target class in the stored bytes, seeds repeat,
teachers from files work or fail in one line naming `impressions`."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dfkd.errors import DfkdError
from dfkd.models import build_model, load_model, model_record
from dfkd.synthesis.inversion import (
    DEFAULTS, bn_distances, check_teacher, resolve_settings, starting_noise, synthesize_batch, to_uint8,
)
from dfkd.training import normalize

SPEC = {"channels": 1, "image_size": 16, "num_classes": 4, "mean": [0.3], "std": [0.3]}
FAST = {"iterations": 150}
CPU = torch.device("cpu")


class TinyBN(nn.Module):
    """conv-BN-ReLU-pool, conv-BN-ReLU, global average pool, linear: 16x16 grey images, 4 classes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.body(x))


def _toy_images(classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[0, 1] images: a horizontal bar, a vertical bar, a bright square top left or bottom right, on noise."""
    n = len(classes)
    x = 0.15 * torch.rand(n, 1, 16, 16, generator=generator)
    at = torch.randint(3, 13, (n,), generator=generator)
    for i, (c, a) in enumerate(zip(classes.tolist(), at.tolist())):
        if c == 0:
            x[i, 0, a - 1:a + 1, 2:14] = 0.9
        elif c == 1:
            x[i, 0, 2:14, a - 1:a + 1] = 0.9
        elif c == 2:
            x[i, 0, 2:7, 2:7] = 0.9
        else:
            x[i, 0, 9:14, 9:14] = 0.9
    return x


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module():
    """The module fixtures below run before conftest's per-test one_torch_thread: one thread for them too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> TinyBN:
    """The tiny BN teacher, trained for 150 steps (its running statistics are the toy data's)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = TinyBN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        y = torch.randint(0, 4, (64,), generator=g)
        x = (_toy_images(y, g) - 0.3) / 0.3
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    y = torch.arange(4).repeat(50)
    with torch.no_grad():
        accuracy = (model((_toy_images(y, g) - 0.3) / 0.3).argmax(1) == y).float().mean()
    assert accuracy > 0.95, accuracy  # the fixture itself must be a working teacher
    return model


def _classes() -> torch.Tensor:
    return torch.arange(4).repeat(8)  # (32,) int64


def _invert(teacher, seed: int = 0, **settings):
    g = torch.Generator().manual_seed(seed)
    return synthesize_batch(teacher, _classes(), SPEC, {**FAST, **settings}, g, CPU)


@pytest.fixture(scope="module")
def inverted(teacher):
    return _invert(teacher)


# ---------------------------------------------------------------------------- what synthesis gives
def test_each_bn_layers_statistics_move_towards_its_running_statistics(teacher, inverted):
    images, _ = inverted
    noise = to_uint8(starting_noise(len(images), SPEC, torch.Generator().manual_seed(0), CPU), SPEC)
    before, after = bn_distances(teacher, noise, SPEC), bn_distances(teacher, images, SPEC)
    assert len(before) == len(after) == 2
    for layer, (b, a) in enumerate(zip(before, after)):
        assert a < 0.5 * b, (layer, b, a)


def test_without_the_bn_term_the_statistics_stay_further(teacher, inverted):
    """The BN term does the work: with its weight at 0 the first layer's statistics end further away."""
    images, _ = inverted
    plain, _ = _invert(teacher, bn=0.0)
    assert bn_distances(teacher, images, SPEC)[0] < bn_distances(teacher, plain, SPEC)[0]


def test_the_teacher_sees_the_target_class_in_the_stored_bytes(teacher, inverted):
    images, soft = inverted
    assert images.dtype == torch.uint8 and images.shape == (32, 1, 16, 16)
    assert soft.dtype == torch.float32 and soft.shape == (32, 4)
    with torch.no_grad():
        predicted = teacher(normalize(images, SPEC["mean"], SPEC["std"])).argmax(1)
    assert (predicted == _classes()).float().mean() >= 0.9, predicted
    # the soft targets are the one-hot targets the images were optimised towards
    assert torch.equal(soft, F.one_hot(_classes(), 4).float())
    assert images.float().std() > 10  # not a blank image


def test_seeded_bytes_repeat_and_seeds_differ(teacher, inverted):
    images, soft = inverted
    again, soft_again = _invert(teacher, seed=0)
    assert torch.equal(images, again) and torch.equal(soft, soft_again)
    assert not torch.equal(images, _invert(teacher, seed=1)[0])


def test_the_teacher_is_left_as_it_was_found(teacher):
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    teacher.body[1].eval()  # a mixed state, kept per module
    try:
        _invert(teacher, iterations=3)
        assert teacher.training and not teacher.body[1].training and teacher.body[5].training
        assert all(p.requires_grad for p in teacher.parameters())
        for key, value in teacher.state_dict().items():  # running statistics untouched (eval mode inside)
            assert torch.equal(value, state[key]), key
    finally:
        teacher.eval()


def test_per_channel_spec_and_attribute_spec(teacher):
    """spec may be an object with attributes; mean/std may be per channel."""
    class Spec:
        channels, image_size, num_classes, mean, std = 1, 16, 4, [0.3], [0.3]

    images, _ = synthesize_batch(teacher, torch.tensor([0, 1]), Spec(), {"iterations": 2},
                                 torch.Generator().manual_seed(0), CPU)
    assert images.shape == (2, 1, 16, 16)


# ---------------------------------------------------------------------------- settings
def test_defaults_are_the_papers_cifar10_parameters():
    assert DEFAULTS == {"iterations": 2000, "lr": 0.05, "ce": 1.0, "bn": 10.0, "tv": 2.5e-5,
                        "l2": 0.0, "jitter": 2, "flip": True}
    assert resolve_settings({"kind": "inversion", "batch": 64, "lr": 0.1}) == {**DEFAULTS, "lr": 0.1}


@pytest.mark.parametrize("settings, words", [
    ({"iters": 5}, "unknown setting(s) ['iters']"),
    ({"iterations": 0}, "iterations must be an integer >= 1"),
    ({"lr": 0}, "lr must be > 0"),
    ({"bn": -1}, "bn must be a finite number >= 0"),
    ({"flip": "yes"}, "flip must be true or false"),
])
def test_bad_settings_are_one_line(settings, words):
    with pytest.raises(DfkdError) as exc:
        resolve_settings(settings)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_bad_classes_are_one_line(teacher):
    with pytest.raises(DfkdError, match="classes must lie in 0..3"):
        synthesize_batch(teacher, torch.tensor([0, 4]), SPEC, FAST, torch.Generator(), CPU)


# ---------------------------------------------------------------------------- teachers that cannot be inverted
def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "impressions" in message, message
    return message


def test_a_teacher_without_batchnorm_is_refused_naming_impressions():
    with pytest.raises(DfkdError) as exc:
        check_teacher(build_model("lenet5", 1, 10, 32))
    assert "has no BatchNorm layer" in _one_line(exc)
    untracked = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(DfkdError) as exc:
        check_teacher(untracked)
    assert "keep no running statistics" in _one_line(exc)


def test_torchscript_and_export_forms_are_refused_naming_the_form(teacher):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(teacher)
        traced = torch.jit.trace(teacher, torch.zeros(2, 1, 16, 16))
    for module in (scripted, traced):
        with pytest.raises(DfkdError) as exc:
            check_teacher(module)
        assert "is TorchScript, whose 2 BatchNorm layer(s)" in _one_line(exc)
    program = torch.export.export(teacher, (torch.zeros(2, 1, 16, 16),)).module()
    with pytest.raises(DfkdError) as exc:
        synthesize_batch(program, torch.tensor([0, 1]), SPEC, FAST, torch.Generator(), CPU)
    assert "torch.export program (.pt2), whose 2 batch-norm" in _one_line(exc)


# ---------------------------------------------------------------------------- teachers from files (teacher.load)
FMNIST = {"channels": 1, "image_size": 32, "num_classes": 10, "mean": [0.286], "std": [0.353]}


def _with_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Running statistics that random noise does not already have (an untrained model's are 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.2 + torch.rand(m.num_features, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """lenet5_bn as a dfkd model file and as the state_dict, TorchScript and .pt2 files of `teacher.load`."""
    from dfkd.io.artifacts import save_torch
    from test_external_teacher import _export_script

    folder = tmp_path_factory.mktemp("inversion_teachers")
    torch.manual_seed(0)
    model = _with_statistics(build_model("lenet5_bn", 1, 10, 32), 0)
    native = folder / "native.pt"
    save_torch(native, model_record(model, "lenet5_bn", 1, 10, 32, FMNIST["mean"], FMNIST["std"], {"stage": "test"}))
    return {"native": native, **_export_script().export_teacher(native, folder / "forms")}


def _imported(folder, form: str, path, spec=FMNIST, **load):
    from dfkd.stages.teacher import import_teacher

    out = folder / f"imported_{form}"
    import_teacher(path, {**spec, "target": "own", "load": {"path": str(path), "format": form, **load}}, out)
    return load_model(out / "model.pt")[0]


def _closer_after_a_few_steps(model, spec, iterations=30, every_layer=True):
    """A few steps bring the BN statistics closer: every layer's, or (many layers, few steps) their sum."""
    g = torch.Generator().manual_seed(0)
    noise = to_uint8(starting_noise(16, spec, g, CPU), spec)
    images, _ = synthesize_batch(model, torch.arange(16) % spec["num_classes"], spec, {"iterations": iterations},
                                 torch.Generator().manual_seed(0), CPU)
    before, after = bn_distances(model, noise, spec), bn_distances(model, images, spec)
    if every_layer:
        assert all(a < b for a, b in zip(after, before)), (before, after)
    else:
        assert sum(after) < 0.9 * sum(before), (sum(before), sum(after))
    return before


@pytest.mark.parametrize("form", ["state_dict", "layer"])
def test_state_dict_teacher_from_a_file(files, tmp_path, form):
    """Registry weights (the ordinary model file) and with `layer` (the ExternalTeacher wrapper) both invert."""
    extra = {"arch": "lenet5_bn", **({"layer": "fc"} if form == "layer" else {})}
    model = _imported(tmp_path, "state_dict", files["state_dict"], **extra)
    assert len(_closer_after_a_few_steps(model, FMNIST)) == 2


def test_torchvision_teacher_from_a_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = _with_statistics(torchvision.models.get_model("resnet18", weights=None, num_classes=10), 1)
    path = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), path)
    spec = {**FMNIST, "channels": 3, "mean": [0.5], "std": [0.25]}
    model = _imported(tmp_path, "torchvision", path, spec, arch="resnet18")
    assert len(check_teacher(model)) == 20  # every BatchNorm2d of resnet18 is reached through the wrapper
    _closer_after_a_few_steps(model, spec, iterations=25, every_layer=False)


@pytest.mark.parametrize("form, words", [
    ("torchscript", "is TorchScript, whose 2 BatchNorm layer(s)"),
    ("export", "torch.export program (.pt2), whose 2 batch-norm"),
])
def test_program_teachers_from_files_are_refused(files, tmp_path, form, words):
    model = _imported(tmp_path, form, files[form])
    with pytest.raises(DfkdError) as exc:
        synthesize_batch(model, torch.tensor([0, 1]), FMNIST, FAST, torch.Generator(), CPU)
    assert words in _one_line(exc)
