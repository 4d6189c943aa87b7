"""Bring your own model: expose any ``nn.Module`` classifier as a :class:`Classifier`.

A practitioner's network already has an encoder and a head; only the split point is needed::

    model = wrap_model(torchvision.models.resnet18(num_classes=10), head="fc")
    model = wrap_model(vgg, head="classifier.6")

The features are the input of the head, obtained by running the user's module with the head
temporarily replaced by ``nn.Identity``, so no architecture-specific forward is rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from conun.models.base import Classifier


class WrappedClassifier(Classifier):
    """A user's module split at its head.

    The user's module is kept whole as ``self.module`` (head included, registered once), so the
    parameters are shared with the caller's object, not copied, and ``state_dict`` keys are the
    original keys prefixed with ``"module."``.

    Args:
        module: the user's classifier, ``(N, C_in, H, W) -> (N, C)``.
        head: dotted name of the submodule mapping features to logits.
        feature_dim: D, the width of the head's input.
        num_classes: C, the width of the head's output.
    """

    def __init__(self, module: nn.Module, *, head: str, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.module = module
        self.head_name = head
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        parent_name, _, self._head_attr = head.rpartition(".")
        self._head_parent_name = parent_name

    @property
    def head(self) -> nn.Module:
        """The user's head submodule (the same object as inside ``self.module``)."""
        return self.module.get_submodule(self.head_name)

    @contextmanager
    def _head_removed(self) -> Iterator[None]:
        # Swap on every call instead of once at construction: the caller's module must keep
        # producing logits when they use it directly.
        parent = self.module.get_submodule(self._head_parent_name)
        head = getattr(parent, self._head_attr)
        setattr(parent, self._head_attr, nn.Identity())
        try:
            yield
        finally:
            setattr(parent, self._head_attr, head)

    def features(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, D)``: the head's input, flattened per sample."""
        with self._head_removed():
            out = self.module(x)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"the wrapped module must return a tensor with its head removed; "
                f"got {type(out).__name__}"
            )
        features = out.flatten(1)
        if features.shape[1] != self.feature_dim:
            raise ValueError(
                f"the input of head {self.head_name!r} has {features.shape[1]} features per "
                f"sample, but feature_dim is {self.feature_dim}"
            )
        return features

    def classify(self, features: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` logits through the user's head."""
        out: Tensor = self.head(features)
        return out


def _resolve_head(module: nn.Module, head: str) -> nn.Module:
    """The submodule at dotted path ``head``, with errors that show what exists there."""
    if not head or any(not part for part in head.split(".")):
        raise ValueError(f"head must be a dotted submodule name such as 'fc'; got {head!r}")
    current = module
    walked: list[str] = []
    for part in head.split("."):
        children = dict(current.named_children())
        where = ".".join(walked) or type(module).__name__
        if part not in children:
            if hasattr(current, part):
                kind = type(getattr(current, part)).__name__
                raise TypeError(
                    f"head {head!r}: {part!r} in {where} is a {kind}, not a submodule; "
                    f"the head must be an nn.Module mapping features to logits"
                )
            names = ", ".join(children) or "(none)"
            raise ValueError(
                f"head {head!r} not found: {where} has no child {part!r}; its children are: {names}"
            )
        current = children[part]
        walked.append(part)
    return current


def wrap_model(
    module: nn.Module,
    *,
    head: str | None = None,
    num_classes: int | None = None,
    feature_dim: int | None = None,
) -> Classifier:
    """Expose a user's ``nn.Module`` classifier as a :class:`Classifier`.

    Args:
        module: the classifier, ``(N, C_in, H, W) -> (N, C)`` logits. It is used in place, not
            copied: training the wrapper trains ``module``.
        head: dotted name of the submodule that maps features to logits (``"fc"`` for a
            torchvision ResNet, ``"classifier.6"`` for VGG). ``None`` only when ``module``
            already is a :class:`Classifier`, which is then returned unchanged.
        num_classes: C; inferred when the head is an ``nn.Linear``, required otherwise.
        feature_dim: D, the width of the head's input; inferred when the head is an
            ``nn.Linear``, required otherwise.

    Returns:
        A :class:`Classifier` whose ``features(x)`` is the head's input flattened to ``(N, D)``
        and whose ``classify`` is the head.

    Raises:
        ValueError: the head is not found, or the sizes are missing, wrong or inconsistent.
        TypeError: ``module`` is not an ``nn.Module`` or ``head`` names something that is not a
            submodule.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    if head is None:
        if isinstance(module, Classifier):
            return module
        raise ValueError(
            f"{type(module).__name__} is not a conun Classifier: pass head=<dotted name of the "
            f"submodule that maps features to logits>, e.g. 'fc'; top-level children: "
            f"{', '.join(name for name, _ in module.named_children()) or '(none)'}"
        )
    head_module = _resolve_head(module, head)
    if isinstance(head_module, nn.Linear):
        for given, actual, what in (
            (num_classes, head_module.out_features, "num_classes"),
            (feature_dim, head_module.in_features, "feature_dim"),
        ):
            if given is not None and given != actual:
                raise ValueError(
                    f"{what}={given} contradicts head {head!r}, {head_module!r}, "
                    f"which gives {actual}"
                )
        num_classes, feature_dim = head_module.out_features, head_module.in_features
    elif num_classes is None or feature_dim is None:
        raise ValueError(
            f"head {head!r} is a {type(head_module).__name__}, not an nn.Linear, so its sizes "
            f"cannot be read off it: pass num_classes= and feature_dim="
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (one logit per class); got {num_classes}")
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be >= 1; got {feature_dim}")
    return WrappedClassifier(module, head=head, feature_dim=feature_dim, num_classes=num_classes)
