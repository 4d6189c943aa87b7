"""BatchNorm folded into the convolution before it for evaluation (conun.models.folding): the
same logits as the model's own modules, only where folding cannot change what is computed, and
the model's modules back afterwards whatever happens."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from conun.evaluation.accuracy import model_logits
from conun.models import build_model
from conun.models.folding import FoldedConv, foldable_pairs, folded_batchnorm


def _with_running_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with random BatchNorm statistics and affine parameters (fresh
    BatchNorms are the identity, which would hide a wrong fold)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            channels = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))
    return model.eval()


def test_folded_logits_equal_the_models_own_and_its_modules_come_back() -> None:
    torch.manual_seed(0)
    model = _with_running_statistics(
        build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28))
    )
    images = torch.randn(37, 1, 28, 28)
    with torch.no_grad():
        expected = model(images)
    modules = dict(model.named_modules())
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert len(foldable_pairs(model)) == 3  # each conv + BatchNorm block of small_cnn
    with torch.no_grad(), folded_batchnorm(model):
        assert sum(isinstance(m, FoldedConv) for m in model.modules()) == 3
        folded = model(images)
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
    # The very same module objects and tensors afterwards.
    assert dict(model.named_modules()) == modules
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # And through the evaluation path every metric uses.
    torch.testing.assert_close(
        model_logits(model, images, batch_size=16), expected, rtol=1e-4, atol=1e-4
    )
    assert dict(model.named_modules()) == modules


def test_the_modules_come_back_when_the_block_raises() -> None:
    model = _with_running_statistics(
        build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28))
    )
    modules = dict(model.named_modules())
    with pytest.raises(RuntimeError, match="inside"), folded_batchnorm(model):
        raise RuntimeError("inside")
    assert dict(model.named_modules()) == modules


def test_only_pairs_that_cannot_change_the_result_are_folded() -> None:
    def block() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())

    class Residual(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + super().forward(x)

    hooked, training, no_stats, fine = block(), block(), block(), block()
    residual = Residual(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    model = nn.Sequential(hooked, training, no_stats, residual, fine, nn.Flatten())
    _with_running_statistics(model)
    hooked[0].register_forward_hook(lambda *args: None)
    training.train()
    no_stats[1] = nn.BatchNorm2d(4, track_running_stats=False).eval()
    pairs = foldable_pairs(model)
    assert [(container, conv, norm) for container, conv, norm in pairs] == [(fine, "0", "1")]
    # A ResNet block calls conv1 / bn1 from its own forward: left alone; its downsample
    # (a Sequential of conv and BatchNorm) is folded.
    resnet = _with_running_statistics(torchvision.models.resnet18(num_classes=10))
    folded = {id(container) for container, _, _ in foldable_pairs(resnet)}
    downsamples = {id(m.downsample) for m in resnet.modules() if getattr(m, "downsample", None)}
    assert folded == downsamples and len(folded) == 3
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = resnet(images)
        with folded_batchnorm(resnet):
            torch.testing.assert_close(resnet(images), expected, rtol=1e-4, atol=1e-4)


def test_one_dimensional_pairs_fold_too() -> None:
    model = _with_running_statistics(
        nn.Sequential(nn.Conv1d(2, 5, 3, stride=2, bias=True), nn.BatchNorm1d(5), nn.Flatten())
    )
    signal = torch.randn(6, 2, 17)
    with torch.no_grad():
        expected = model(signal)
        with folded_batchnorm(model):
            assert isinstance(model[0], FoldedConv) and isinstance(model[1], nn.Identity)
            torch.testing.assert_close(model(signal), expected, rtol=1e-5, atol=1e-5)
