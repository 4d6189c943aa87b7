"""ResNet-18/34/50/101 with the CIFAR stem, the paper's models, built on torchvision's ResNet.

The ImageNet stem (7x7 stride-2 conv + max-pool) shrinks a 32x32 image to 8x8 before the first
residual stage; the CIFAR stem (3x3 stride-1 conv, no max-pool) keeps 32x32, which is what the
paper trains. Each architecture is registered twice: ``resnetXX`` (linear head on the pooled
features, ``D = 512`` or ``2048``) and ``resnetXX_proj`` (the authors' projection head, ``D = 128``,
unit norm); see :mod:`conun.models.heads`.

``model_args: {width: W}`` scales every stage: W, 2W, 4W, 8W channels instead of the paper's 64,
128, 256, 512 (the same depth, blocks, strides and heads; D = 8W or 32W). Narrow ResNets run
the paper's presets end to end on a CPU in the tests; a GPU run keeps the default 64.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from conun.models.base import Classifier
from conun.models.heads import LinearHeadClassifier, ProjectionClassifier
from conun.models.registry import InputShape, register_model

# Three stride-2 stages take 8x8 down to 1x1; smaller inputs would pool over padding.
MIN_SIZE = 8

WIDTH = 64
"""Channels of the first residual stage in the paper's (and torchvision's) ResNets."""


def check_width(width: object) -> int:
    """``width`` if it is an integer >= 1, else a ValueError naming what is allowed."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(
            f"model_args.width must be an integer >= 1 (the first stage's channels; the paper's "
            f"ResNets have {WIDTH}); got {width!r}"
        )
    return width


def cifar_resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    *,
    in_channels: int,
    width: int = WIDTH,
) -> ResNet:
    """A torchvision ResNet encoder with the CIFAR stem and no classifier.

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101).
        layers: residual blocks per stage, e.g. ``[2, 2, 2, 2]``.
        in_channels: channels of the input images (1 grey, 3 RGB).
        width: channels of the first stage (the stages have width x 1, 2, 4, 8).

    Returns:
        A module mapping ``(N, in_channels, H, W)`` to pooled, flattened
        ``(N, 8 * width * expansion)`` features (its ``fc`` is ``nn.Identity``). Weights are
        freshly initialised, never downloaded.
    """
    # torchvision fixes the stage widths; for another width its own _make_layer rebuilds every
    # stage narrower, so the full-width skeleton is built on the meta device (no memory, no
    # initialisation; every module with parameters is replaced below). The default width is
    # built as it always was, drawing exactly the same random numbers.
    with torch.device("meta") if width != WIDTH else contextlib.nullcontext():
        net = ResNet(block, layers)
    if width != WIDTH:
        net.inplanes = width
        net.bn1 = nn.BatchNorm2d(width)
        for stage, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True)):
            setattr(
                net, f"layer{stage + 1}", net._make_layer(block, width * 2**stage, blocks, stride)
            )
        for module in net.modules():  # torchvision's initialisation, for the new stages
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
    net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
    # torchvision initialises its convolutions in __init__; give the replacement the same init.
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    # torchvision's forward flattens the pooled map before fc, so with fc removed the output is
    # already the (N, D) representation.
    net.fc = nn.Identity()
    return net


def _plain(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    input_shape: InputShape,
    width: object,
) -> Classifier:
    width = check_width(width)
    encoder = cifar_resnet(block, layers, in_channels=input_shape[0], width=width)
    return LinearHeadClassifier(
        encoder, feature_dim=8 * width * block.expansion, num_classes=num_classes
    )


def _projection(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    input_shape: InputShape,
    width: object,
) -> Classifier:
    width = check_width(width)
    encoder = cifar_resnet(block, layers, in_channels=input_shape[0], width=width)
    return ProjectionClassifier(
        encoder, encoder_dim=8 * width * block.expansion, num_classes=num_classes
    )


@register_model("resnet18", min_size=MIN_SIZE, args=("width",))
def resnet18(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-18, CIFAR stem, linear head on 512-d pooled features."""
    return _plain(BasicBlock, [2, 2, 2, 2], num_classes, input_shape, width)


@register_model("resnet34", min_size=MIN_SIZE, args=("width",))
def resnet34(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-34, CIFAR stem, linear head on 512-d pooled features."""
    return _plain(BasicBlock, [3, 4, 6, 3], num_classes, input_shape, width)


@register_model("resnet50", min_size=MIN_SIZE, args=("width",))
def resnet50(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-50, CIFAR stem, linear head on 2048-d pooled features."""
    return _plain(Bottleneck, [3, 4, 6, 3], num_classes, input_shape, width)


@register_model("resnet101", min_size=MIN_SIZE, args=("width",))
def resnet101(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-101, CIFAR stem, linear head on 2048-d pooled features."""
    return _plain(Bottleneck, [3, 4, 23, 3], num_classes, input_shape, width)


@register_model("resnet18_proj", min_size=MIN_SIZE, args=("width",))
def resnet18_proj(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-18, CIFAR stem, projection 512-512-128 (unit norm), ReLU + linear head."""
    return _projection(BasicBlock, [2, 2, 2, 2], num_classes, input_shape, width)


@register_model("resnet34_proj", min_size=MIN_SIZE, args=("width",))
def resnet34_proj(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-34, CIFAR stem, projection 512-512-128 (unit norm), ReLU + linear head."""
    return _projection(BasicBlock, [3, 4, 6, 3], num_classes, input_shape, width)


@register_model("resnet50_proj", min_size=MIN_SIZE, args=("width",))
def resnet50_proj(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-50, CIFAR stem, projection 2048-2048-128 (unit norm), ReLU + linear head."""
    return _projection(Bottleneck, [3, 4, 6, 3], num_classes, input_shape, width)


@register_model("resnet101_proj", min_size=MIN_SIZE, args=("width",))
def resnet101_proj(*, num_classes: int, input_shape: InputShape, width: int = WIDTH) -> Classifier:
    """ResNet-101, CIFAR stem, projection 2048-2048-128 (unit norm), ReLU + linear head."""
    return _projection(Bottleneck, [3, 4, 23, 3], num_classes, input_shape, width)
