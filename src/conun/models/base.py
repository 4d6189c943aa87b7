"""The interface every conun model satisfies: an encoder ``features`` and a head ``classify``.

Contrastive unlearning works on the representation ``z = E(x)`` and the cross-entropy on the
logits ``H(z)``; both come out of one forward pass through :meth:`Classifier.forward_features`
so that a method never runs the encoder twice on the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class ModelOutput:
    """What one forward pass returns.

    Attributes:
        features: ``(N, D)`` representation (not normalised unless the model normalises it).
        logits: ``(N, C)`` class scores.
    """

    features: Tensor
    logits: Tensor


class Classifier(nn.Module):
    """Base class: ``logits = classify(features(x))``.

    Subclasses implement :meth:`features` and :meth:`classify` and set ``feature_dim`` and
    ``num_classes``. ``forward(x)`` returns logits so that a ``Classifier`` drops into any code
    that expects a plain PyTorch classifier.
    """

    feature_dim: int
    num_classes: int

    def features(self, x: Tensor) -> Tensor:
        """Representation of a batch.

        Args:
            x: ``(N, C_in, H, W)`` images.

        Returns:
            ``(N, D)`` features, ``D = feature_dim``.
        """
        raise NotImplementedError

    def classify(self, features: Tensor) -> Tensor:
        """Logits from features.

        Args:
            features: ``(N, D)`` output of :meth:`features`.

        Returns:
            ``(N, C)`` logits, ``C = num_classes``.
        """
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> ModelOutput:
        """One forward pass returning both the features and the logits."""
        z = self.features(x)
        return ModelOutput(features=z, logits=self.classify(z))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, C)`` for images ``(N, C_in, H, W)``."""
        return self.classify(self.features(x))
