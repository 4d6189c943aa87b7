"""Models of other libraries behind conun's contract: ``timm:``, ``torchvision:`` and ``hf:``.

A practitioner's model is usually a timm, torchvision or Hugging Face backbone; each source
builds it untrained (nothing is downloaded: weights come from ``--init`` or a local directory)
and exposes it as a :class:`~conun.models.base.Classifier`:

- ``timm:<name>``: ``timm.create_model(name, pretrained=False, num_classes=C, in_chans=C_in,
  **model_args)``; the representation is timm's pre-logits features,
  ``forward_head(forward_features(x), pre_logits=True)``, and the head is ``get_classifier()``.
  ``img_size`` defaults to the data's ``(H, W)`` for models that take one (ViTs).
- ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None, num_classes=C,
  **model_args)``, the ImageNet-stem models; the head is found by name (the last
  ``nn.Linear`` with C outputs, or ``model_args["head"]``); grey images are repeated to RGB.
- ``hf:<directory>``: a transformers image-classification model saved there with
  ``save_pretrained``, loaded with ``local_files_only=True``; its classifier is the head.

timm and transformers are optional (``pip install 'conun[timm]'``, ``'conun[hf]'``); they are
imported when such a model is built, and a missing one is an error naming that command.

Each classifier records ``native_prefix``, the prefix of the library's own ``state_dict`` keys
inside conun's, so that ``--init`` reads weights saved by the library itself
(:mod:`conun.models.weights`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from conun.models.base import Classifier
from conun.models.registry import InputShape, register_model_source
from conun.models.wrap import WrappedClassifier

HEAD_ARG = "head"
"""``model_args`` key naming the head submodule of a torchvision or Hugging Face model."""


class MissingExtraError(ImportError):
    """An optional library is not installed; the message names the command that installs it."""


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or fail with the pip command that installs it.

    Args:
        module: the module to import (``"timm"``, ``"transformers"``).
        extra: conun's extra that installs it (``"timm"``, ``"hf"``).

    Raises:
        MissingExtraError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{module} is not installed ({error}); models named {extra}:<...> need it: "
            f"pip install 'conun[{extra}]'"
        ) from None


def _repeat_to_rgb(x: Tensor, expected: int) -> Tensor:
    """Grey ``(N, 1, H, W)`` images as ``(N, expected, H, W)`` for a model built for RGB."""
    if x.shape[1] == expected:
        return x
    return x.expand(-1, expected, -1, -1)


def _rgb_channels(source: str, name: str, channels: int) -> int:
    """The channels a fixed-stem model gets: its own 3, fed by repeating grey images."""
    if channels not in (1, 3):
        raise ValueError(
            f"{source}:{name} takes RGB images (or grey ones, repeated to RGB); the data has "
            f"{channels} channels"
        )
    return 3


# --- timm -----------------------------------------------------------------------------------


class TimmClassifier(Classifier):
    """A timm model: features are its pre-logits features, the head its classifier.

    Use it directly on a timm model of your own: ``TimmClassifier(timm.create_model(...))``.

    Args:
        model: a timm model (``forward_features``, ``forward_head``, ``get_classifier``).
        num_classes: C; default: the model's ``num_classes``.
    """

    native_prefix = "model."

    def __init__(self, model: nn.Module, *, num_classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        classes = getattr(model, "num_classes", None) if num_classes is None else num_classes
        if not isinstance(classes, int) or classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {classes!r}")
        self.num_classes = classes
        head = model.get_classifier()  # type: ignore[operator]
        if not isinstance(head, nn.Module):
            raise ValueError(
                f"timm model {type(model).__name__} has {type(head).__name__} heads (a distilled "
                "model?); conun needs one classifier module"
            )
        width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
        if isinstance(head, nn.Linear):
            width = head.in_features
        if not isinstance(width, int):
            raise ValueError(f"cannot tell the feature width of timm model {type(model).__name__}")
        self.feature_dim = width

    def features(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, D)`` pre-logits features."""
        hidden = self.model.forward_features(x)  # type: ignore[operator]
        out: Tensor = self.model.forward_head(hidden, pre_logits=True)  # type: ignore[operator]
        return out.flatten(1)

    @property
    def head(self) -> nn.Module:
        """timm's classifier (the same object as inside ``self.model``): the output layer that
        fisher and boundary_expanding look for, as on conun's own models."""
        head: nn.Module = self.model.get_classifier()  # type: ignore[operator]
        return head

    def classify(self, features: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` logits through timm's classifier."""
        out: Tensor = self.head(features)
        return out


@register_model_source("timm", usage="timm:<name>")
def timm_model(
    argument: str, *, num_classes: int, input_shape: InputShape, model_args: dict[str, Any]
) -> Classifier:
    """A timm architecture, untrained (``pretrained=False``)."""
    timm = import_optional("timm", "timm")
    if not timm.is_model(argument):
        close = timm.list_models(f"*{argument}*")[:5]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ValueError(f"timm has no model {argument!r}{hint}")
    kwargs: dict[str, Any] = {
        "pretrained": False,
        "num_classes": num_classes,
        "in_chans": input_shape[0],
        **model_args,
    }
    model = _with_default_size(timm.create_model, argument, "img_size", input_shape[1:], kwargs)
    return TimmClassifier(model, num_classes=num_classes)


def _with_default_size(
    create: Any, name: str, key: str, size: tuple[int, ...], kwargs: dict[str, Any]
) -> nn.Module:
    """``create(name, **kwargs)``, with ``kwargs[key]`` defaulting to the data's image size.

    Vision transformers fix their position embeddings to the image size, so it defaults to the
    data's; a model without the argument refuses it when called, before building anything, and
    is then built without it.
    """
    if key in kwargs:
        model: nn.Module = create(name, **kwargs)
        return model
    square = size[0] if size[0] == size[1] else tuple(size)
    try:
        model = create(name, **{key: square}, **kwargs)
    except TypeError as error:
        if key not in str(error):
            raise
        model = create(name, **kwargs)
    return model


# --- torchvision and Hugging Face: a module split at its head --------------------------------


class BackboneClassifier(WrappedClassifier):
    """A library's classifier split at its head, grey inputs repeated to its channels.

    Args:
        module: the classifier ``(N, channels, H, W) -> (N, C)``.
        head: dotted name of its head.
        feature_dim: D.
        num_classes: C.
        channels: the input channels the module was built for.
        native_prefix: prefix of the library's own ``state_dict`` keys inside this one's.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        head: str,
        feature_dim: int,
        num_classes: int,
        channels: int,
        native_prefix: str,
    ) -> None:
        super().__init__(module, head=head, feature_dim=feature_dim, num_classes=num_classes)
        self.channels = channels
        self.native_prefix = native_prefix

    def features(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, D)``: the head's input."""
        return super().features(_repeat_to_rgb(x, self.channels))


def find_head(module: nn.Module, num_classes: int, what: str) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` with ``num_classes`` outputs: the head of a classifier built for C.

    Raises:
        ValueError: there is none (name it with ``model_args.head``).
    """
    found = [
        (name, layer)
        for name, layer in module.named_modules()
        if isinstance(layer, nn.Linear) and layer.out_features == num_classes
    ]
    if not found:
        raise ValueError(
            f"{what} has no nn.Linear layer with {num_classes} outputs to use as its head; name "
            f"the head with --set model_args.{HEAD_ARG}=<dotted submodule name>"
        )
    return found[-1]


def _split_at_head(
    module: nn.Module, head: str | None, num_classes: int, what: str
) -> tuple[str, int]:
    """``(head name, feature_dim)`` of ``module``; the head is named or found."""
    if head is None:
        head, layer = find_head(module, num_classes, what)
    else:
        named = module.get_submodule(head)
        if not isinstance(named, nn.Linear) or named.out_features != num_classes:
            raise ValueError(
                f"{what}: head {head!r} must be an nn.Linear with {num_classes} outputs; got "
                f"{named!r}"
            )
        layer = named
    return head, layer.in_features


@register_model_source("torchvision", usage="torchvision:<name>")
def torchvision_model(
    argument: str, *, num_classes: int, input_shape: InputShape, model_args: dict[str, Any]
) -> Classifier:
    """A torchvision.models classifier (ImageNet stem), untrained (``weights=None``)."""
    from torchvision import models as tv_models

    args = dict(model_args)
    head = args.pop(HEAD_ARG, None)
    available = tv_models.list_models(module=tv_models)
    if argument not in available:
        raise ValueError(
            f"torchvision has no classification model {argument!r}; available: "
            + ", ".join(available)
        )
    channels = _rgb_channels("torchvision", argument, input_shape[0])
    module = _with_default_size(
        tv_models.get_model,
        argument,
        "image_size",
        input_shape[1:],
        {"weights": None, "num_classes": num_classes, **args},
    )
    head, feature_dim = _split_at_head(module, head, num_classes, f"torchvision:{argument}")
    return BackboneClassifier(
        module,
        head=head,
        feature_dim=feature_dim,
        num_classes=num_classes,
        channels=channels,
        native_prefix="module.",
    )


class HuggingFaceLogits(nn.Module):
    """A transformers image classifier as a plain ``pixel_values -> logits`` module.

    Args:
        model: a ``*ForImageClassification`` model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C_out)``: the model's ``logits`` output."""
        out: Tensor = self.model(pixel_values=x).logits
        return out


@register_model_source("hf", usage="hf:<directory saved with save_pretrained>")
def hf_model(
    argument: str, *, num_classes: int, input_shape: InputShape, model_args: dict[str, Any]
) -> Classifier:
    """A Hugging Face image classifier from a local ``save_pretrained`` directory."""
    transformers = import_optional("transformers", "hf")
    args = dict(model_args)
    head = args.pop(HEAD_ARG, None)
    directory = Path(argument).expanduser()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"hf:{argument}: no config.json in {directory}; give a directory written by "
            "model.save_pretrained(directory) (nothing is downloaded)"
        )
    config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    channels = int(getattr(config, "num_channels", 3))
    if input_shape[0] not in (1, channels):
        raise ValueError(
            f"hf:{argument} takes {channels}-channel images; the data has {input_shape[0]}"
        )
    size = getattr(config, "image_size", None)
    if isinstance(size, int) and (size, size) != tuple(input_shape[1:]):
        raise ValueError(
            f"hf:{argument} is configured for {size}x{size} images but the data is "
            f"{input_shape[1]}x{input_shape[2]}; save the model with image_size={input_shape[1]}"
        )
    # The directory's weights are the starting point; a head for another number of classes is
    # re-initialised (ignore_mismatched_sizes), as when fine-tuning a pretrained backbone.
    model = transformers.AutoModelForImageClassification.from_pretrained(
        str(directory),
        num_labels=num_classes,
        ignore_mismatched_sizes=True,
        local_files_only=True,
        **args,
    )
    model = model.to(torch.float32).train()  # from_pretrained returns eval mode
    module = HuggingFaceLogits(model)
    head, feature_dim = _split_at_head(module, head, num_classes, f"hf:{argument}")
    return BackboneClassifier(
        module,
        head=head,
        feature_dim=feature_dim,
        num_classes=num_classes,
        channels=channels,
        native_prefix="module.model.",
    )


__all__ = [
    "BackboneClassifier",
    "HuggingFaceLogits",
    "MissingExtraError",
    "TimmClassifier",
    "find_head",
    "import_optional",
]
