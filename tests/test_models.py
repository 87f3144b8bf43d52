"""Model registry: parameter counts, the features/head split, model files."""
import pytest
import torch

from dfkd.io.artifacts import save_torch
from dfkd.errors import DfkdError
from dfkd.models import MODELS, build_model, count_parameters, load_model, model_record


@pytest.mark.parametrize("arch, channels, expected", [
    ("lenet5", 1, 61_706),          # ZSKD / DAFL LeNet-5
    ("lenet5_bn", 1, 61_728),       # BatchNorm after each conv, convs without bias
    ("lenet5_half", 1, 35_820),     # conv1/conv2 halved
    ("lenet5_quarter", 1, 15_738),  # every layer halved
    ("alexnet", 3, 1_659_178),      # ZSKD CIFAR-10 AlexNet, about 1.66M
    ("alexnet_half", 3, 417_434),
    ("resnet18", 3, 11_173_962),
    ("resnet8", 3, 78_042),
])
def test_parameter_counts(arch, channels, expected):
    assert count_parameters(build_model(arch, channels, 10, 32)) == expected


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_features_head_forward(arch, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, channels, 7, size).eval()
    x = torch.randn(3, channels, size, size)
    with torch.no_grad():
        f = model.features(x)
        assert f.shape == (3, model.feature_dim)
        logits = model(x)
        assert logits.shape == (3, 7)
        torch.testing.assert_close(model.head(f), logits)


def test_unknown_arch_lists_known():
    with pytest.raises(DfkdError, match="lenet5_half"):
        build_model("vgg99", 1, 10, 32)


def test_too_small_image_is_refused():
    with pytest.raises(DfkdError, match="image_size"):
        build_model("lenet5", 1, 10, 12)


def test_model_file_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5_half", 1, 10, 32)
    path = tmp_path / "model.pt"
    save_torch(path, model_record(model, "lenet5_half", 1, 10, 32, [0.5], [0.5], {"stage": "test"}))
    loaded, record = load_model(path)
    assert record["arch"] == "lenet5_half" and record["mean"] == [0.5] and isinstance(record["provenance"], str)
    assert not loaded.training
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_model_file_arch_mismatch_names_file(tmp_path):
    model = build_model("lenet5", 1, 10, 32)
    path = tmp_path / "model.pt"
    record = model_record(model, "lenet5", 1, 10, 32, [0.5], [0.5], {})
    save_torch(path, {**record, "arch": "lenet5_half"})
    with pytest.raises(DfkdError, match="model.pt.*lenet5_half"):
        load_model(path)
    save_torch(path, {**record, "image_size": 28})
    with pytest.raises(DfkdError, match="model.pt"):
        load_model(path)
    save_torch(path, {"state_dict": {}})
    with pytest.raises(DfkdError, match="lacks"):
        load_model(path)
