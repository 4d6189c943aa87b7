"""``small_cnn``: the CPU model for digits (8x8), Fashion-MNIST (28x28) and 32x32 images.

Every convolution has stride 2, so all the convolution work happens at 14x14 and below (for a
28x28 input): a training step on 128 Fashion-MNIST images takes about 10 ms on two CPU cores,
while an equally accurate design with stride-1 convolutions and max-pooling costs 3-10x more. An
adaptive pool to 4x4 keeps *where* things are (global average pooling cost Fashion-MNIST about
two points of accuracy) and makes the feature layer the same size for every input resolution.

Architecture (``N`` images, ``C_in`` channels; spatial sizes for 28x28 / 32x32 / 8x8)::

    conv3x3(C_in -> 32, stride 2)-BN-ReLU    14x14 / 16x16 / 4x4
    conv3x3(32 -> 64, stride 2)-BN-ReLU       7x7 /  8x8  / 2x2
    conv3x3(64 -> 64, stride 2)-BN-ReLU       4x4 /  4x4  / 1x1
    adaptive average pool to 4x4, flatten   (N, 1024)
    Linear(1024 -> 128)-ReLU                (N, 128)   <- features, D = 128
    Linear(128 -> C)                        (N, C)     <- logits

``small_cnn_proj`` puts the authors' projection head on the same encoder.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import Conv2dNormActivation

from conun.models.base import Classifier
from conun.models.heads import LinearHeadClassifier, ProjectionClassifier
from conun.models.registry import InputShape, register_model

FEATURE_DIM = 128
"""D of ``small_cnn``: the width of the penultimate layer."""


def small_cnn_encoder(in_channels: int) -> nn.Sequential:
    """The encoder of ``small_cnn``: ``(N, in_channels, H, W)`` -> ``(N, 128)``.

    Args:
        in_channels: channels of the input images (1 grey, 3 RGB).

    Returns:
        The encoder; its last layer is a ReLU, so the features are non-negative.
    """
    return nn.Sequential(
        # Conv2dNormActivation: conv (no bias, BN has one) + BatchNorm2d + ReLU, padding 1.
        Conv2dNormActivation(in_channels, 32, kernel_size=3, stride=2),
        Conv2dNormActivation(32, 64, kernel_size=3, stride=2),
        Conv2dNormActivation(64, 64, kernel_size=3, stride=2),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, FEATURE_DIM),
        nn.ReLU(inplace=True),
    )


@register_model("small_cnn")
def small_cnn(*, num_classes: int, input_shape: InputShape) -> Classifier:
    """Three stride-2 conv-BN-ReLU layers and a 128-d feature layer; fast on a CPU."""
    return LinearHeadClassifier(
        small_cnn_encoder(input_shape[0]), feature_dim=FEATURE_DIM, num_classes=num_classes
    )


@register_model("small_cnn_proj")
def small_cnn_proj(*, num_classes: int, input_shape: InputShape) -> Classifier:
    """``small_cnn``'s encoder, projection 128-128-128 (unit norm), ReLU + linear head."""
    return ProjectionClassifier(
        small_cnn_encoder(input_shape[0]), encoder_dim=FEATURE_DIM, num_classes=num_classes
    )
