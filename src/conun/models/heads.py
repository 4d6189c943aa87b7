"""Classifiers assembled from an encoder and a head.

Two ways to put a head on an encoder ``E: (N, C_in, H, W) -> (N, d)`` (docs/method.md, "Models"):

- :class:`LinearHeadClassifier`: the plain classifier; ``features = E(x)``, ``logits = W z + b``.
- :class:`ProjectionClassifier`: the authors' code; an MLP projection ``d -> d -> 128`` whose
  L2-normalised output is the representation, and ``ReLU + Linear(128, C)`` on top of it.

Baselines must run on the same network as contrastive unlearning, so every registered model
exists in both variants (``resnet18`` / ``resnet18_proj``, ...).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from conun.models.base import Classifier

PROJECTION_DIM = 128
"""Width of the normalised embedding of the projection variant (the authors' code uses 128)."""


class LinearHeadClassifier(Classifier):
    """``logits = Linear(encoder(x))``; the features are the encoder's output, not normalised.

    Args:
        encoder: maps ``(N, C_in, H, W)`` images to ``(N, feature_dim)``.
        feature_dim: D, the width of the encoder's output.
        num_classes: C.
    """

    def __init__(self, encoder: nn.Module, *, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, D)`` encoder output."""
        out: Tensor = self.encoder(x)
        return out

    def classify(self, features: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` logits."""
        out: Tensor = self.head(features)
        return out


class ProjectionClassifier(Classifier):
    """The authors' network: encoder -> MLP projection -> L2-normalise -> ``ReLU + Linear``.

    ``features(x)`` is the unit-norm ``(N, 128)`` projection, so ``feature_dim`` is 128 whatever
    the encoder's width; the encoder's width is kept as ``encoder_dim``.

    Args:
        encoder: maps ``(N, C_in, H, W)`` images to ``(N, encoder_dim)``.
        encoder_dim: d, the width of the encoder's output.
        num_classes: C.
        projection_dim: width of the normalised embedding.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        encoder_dim: int,
        num_classes: int,
        projection_dim: int = PROJECTION_DIM,
    ) -> None:
        super().__init__()
        self.encoder_dim = encoder_dim
        self.feature_dim = projection_dim
        self.num_classes = num_classes
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Linear(encoder_dim, encoder_dim),
            nn.ReLU(inplace=True),
            nn.Linear(encoder_dim, projection_dim),
        )
        # Not in-place: the head's input is the features tensor that forward_features also
        # returns to the loss; an in-place ReLU would clip it behind the caller's back.
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(projection_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, 128)`` projection with unit L2 norm per row."""
        return F.normalize(self.projection(self.encoder(x)), dim=1)

    def classify(self, features: Tensor) -> Tensor:
        """``(N, 128)`` -> ``(N, C)`` logits."""
        out: Tensor = self.head(features)
        return out


def final_linear(model: Classifier, *, purpose: str) -> nn.Linear:
    """The output layer: the last ``nn.Linear`` inside ``model.head``, ``(D', C)``.

    Args:
        model: the classifier.
        purpose: what the caller does with the layer, for the error message (e.g.
            ``"boundary_expanding widens it"``).

    Raises:
        TypeError: the model has no ``head`` module, or its last ``nn.Linear`` does not have
            ``num_classes`` outputs.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"{type(model).__name__} has no `head` module, and {purpose}: wrap the model with "
            "conun.models.wrap_model(module, head=...)"
        )
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise TypeError(
            f"the head of {type(model).__name__} ({type(head).__name__}) contains no nn.Linear, "
            f"and {purpose}: it needs a linear output layer"
        )
    layer = linears[-1]
    if layer.out_features != model.num_classes:
        raise TypeError(
            f"the last nn.Linear of the head has {layer.out_features} outputs but the model has "
            f"{model.num_classes} classes, and {purpose}: it needs the output layer"
        )
    return layer
