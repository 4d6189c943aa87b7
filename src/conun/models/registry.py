"""Model registry: architectures by name.

A model module registers a factory with :func:`register_model`; :func:`build_model` validates
the request (number of classes, input shape) once, centrally, before any factory runs::

    @register_model("my_net", min_size=16)
    def my_net(*, num_classes: int, input_shape: InputShape) -> Classifier: ...

    model = build_model("my_net", num_classes=10, input_shape=(3, 32, 32))

A registered model may take constructor arguments of its own (``args``; conun's ResNets take
``width``, the channels of the first stage), given as ``model_args`` like a source's.

Models from other libraries are named with a source prefix, ``timm:<name>``,
``torchvision:<name>`` or ``hf:<directory>`` (:mod:`conun.models.external`); a source registers
with :func:`register_model_source` and receives the ``model_args`` of the request::

    model = build_model("timm:vit_small_patch16_224", num_classes=10, input_shape=(1, 28, 28),
                        model_args={"patch_size": 4, "depth": 2, "embed_dim": 32})
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from conun.models.base import Classifier

InputShape = tuple[int, int, int]
"""``(C, H, W)`` of one input image."""

# Modules whose import registers conun's own models. build_model imports them on first use so
# that the registry is complete however the caller reached it (no import-order surprises).
_BUILTIN_MODULES = ("conun.models.small_cnn", "conun.models.resnet", "conun.models.external")

SOURCE_SEPARATOR = ":"
"""Separates a source prefix from its argument: ``timm:vit_small_patch16_224``."""


ModelFactory = Callable[..., Classifier]
"""Builds an untrained model; called by :func:`build_model` after validation as
``factory(num_classes=C, input_shape=(C_in, H, W), **model_args)``, with only the
``model_args`` names the model declared (``register_model(..., args=...)``)."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name.
        factory: builds the model.
        min_size: smallest input height and width the architecture accepts.
        description: first line of the factory's docstring, for listings.
        args: the ``model_args`` names the factory accepts (none for most models).
    """

    name: str
    factory: ModelFactory
    min_size: int
    description: str
    args: tuple[str, ...] = ()


MODELS: dict[str, ModelSpec] = {}
"""Every registered model by name; filled by :func:`register_model`."""


class SourceFactory(Protocol):
    """Builds an untrained model of an external library from the part of the name after the
    prefix (``"vit_small_patch16_224"`` of ``"timm:vit_small_patch16_224"``)."""

    def __call__(
        self,
        argument: str,
        *,
        num_classes: int,
        input_shape: InputShape,
        model_args: dict[str, Any],
    ) -> Classifier: ...


@dataclass(frozen=True)
class ModelSource:
    """A registered source prefix.

    Attributes:
        prefix: the name before ``:`` (``"timm"``).
        factory: builds the model.
        usage: how a name of this source is written, for messages (``"timm:<name>"``).
    """

    prefix: str
    factory: SourceFactory
    usage: str


MODEL_SOURCES: dict[str, ModelSource] = {}
"""Every registered source prefix; filled by :func:`register_model_source`."""


class UnknownModelError(ValueError):
    """A model name that is not registered; the message lists the registered ones."""

    def __init__(self, name: str, available: list[str]) -> None:
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        sources = ", ".join(source.usage for source in MODEL_SOURCES.values())
        from_libraries = f"; or a library's model: {sources}" if sources else ""
        super().__init__(
            f"unknown model {name!r}.{hint} Available models: {', '.join(available)}"
            f"{from_libraries}"
        )
        self.name = name
        self.available = available


def register_model(
    name: str, *, min_size: int = 8, args: tuple[str, ...] = ()
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name``.

    Args:
        name: lower_snake registry name; must not be taken.
        min_size: smallest input height and width the architecture accepts.
        args: keyword arguments the factory accepts through ``model_args`` (the factory
            validates their values).

    Returns:
        The decorator; it returns the factory unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        doc = (factory.__doc__ or "").strip()
        MODELS[name] = ModelSpec(
            name=name,
            factory=factory,
            min_size=min_size,
            description=doc.splitlines()[0] if doc else "",
            args=tuple(args),
        )
        return factory

    return decorator


def register_model_source(prefix: str, *, usage: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator registering a factory for every model name ``<prefix>:<argument>``.

    Args:
        prefix: lower-case library name; must not be taken.
        usage: how a name is written, for messages, e.g. ``"timm:<name>"``.

    Returns:
        The decorator; it returns the factory unchanged.

    Raises:
        ValueError: ``prefix`` is already registered.
    """

    def decorator(factory: SourceFactory) -> SourceFactory:
        if prefix in MODEL_SOURCES:
            raise ValueError(f"model source {prefix!r} is already registered")
        MODEL_SOURCES[prefix] = ModelSource(prefix=prefix, factory=factory, usage=usage)
        return factory

    return decorator


def _load_builtin_models() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Sorted names of every registered model."""
    _load_builtin_models()
    return sorted(MODELS)


def model_source(name: str) -> tuple[ModelSource, str] | None:
    """The source and its argument when ``name`` has a registered prefix, else None.

    Raises:
        ValueError: a registered prefix with nothing after the ``:``.
    """
    _load_builtin_models()
    prefix, separator, argument = name.partition(SOURCE_SEPARATOR)
    if not separator or prefix not in MODEL_SOURCES:
        return None
    source = MODEL_SOURCES[prefix]
    if not argument.strip():
        raise ValueError(f"model {name!r} names no model after {prefix!r}: write {source.usage}")
    return source, argument


def is_model_name(name: str) -> bool:
    """Whether ``name`` is a registered model or has a registered source prefix (the library
    itself is imported only when the model is built)."""
    _load_builtin_models()
    if name in MODELS:
        return True
    prefix, separator, argument = name.partition(SOURCE_SEPARATOR)
    return bool(separator) and prefix in MODEL_SOURCES and bool(argument.strip())


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``.

    Raises:
        UnknownModelError: ``name`` is not registered.
    """
    _load_builtin_models()
    if name not in MODELS:
        raise UnknownModelError(name, sorted(MODELS))
    return MODELS[name]


def _check_num_classes(num_classes: int) -> None:
    # bool is an int subclass; True as a class count is a bug, not a request for one class.
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")


def _check_input_shape(name: str, input_shape: InputShape, min_size: int) -> InputShape:
    # A list (from a YAML config) is as good as a tuple; the factory always gets a tuple.
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else ()
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError(
            f"input_shape must be (C, H, W), three integers, e.g. (1, 28, 28) or (3, 32, 32); "
            f"got {input_shape!r}"
        )
    channels, height, width = shape
    if channels < 1:
        raise ValueError(f"input_shape channels must be >= 1 (1 grey, 3 RGB); got {channels}")
    if height < min_size or width < min_size:
        raise ValueError(
            f"model {name!r} needs inputs of at least {min_size}x{min_size} pixels "
            f"(H, W >= {min_size}); got input_shape {input_shape!r}"
        )
    return channels, height, width


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: InputShape,
    model_args: dict[str, Any] | None = None,
) -> Classifier:
    """Build an untrained registered model.

    Weights are initialised from torch's global RNG: the same ``torch.manual_seed`` gives the
    same model. Nothing is downloaded.

    Args:
        name: registry name, see :func:`available_models`, or ``<source>:<argument>`` for a
            registered source (``timm:<name>``, ``torchvision:<name>``, ``hf:<directory>``).
        num_classes: C >= 2, the width of the logits.
        input_shape: ``(C_in, H, W)`` of the images the model will see.
        model_args: keyword arguments for a source's constructor (e.g. ``img_size``,
            ``patch_size``, ``depth``, ``embed_dim`` for a timm ViT), or those a registered
            model declares (``width`` for conun's ResNets).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ValueError: ``num_classes`` or ``input_shape`` is not allowed for this model, or
            ``model_args`` a registered model does not take (or bad values for those it does).
    """
    args = dict(model_args or {})
    found = model_source(name)
    if found is not None:
        source, argument = found
        _check_num_classes(num_classes)
        shape = _check_input_shape(name, input_shape, 1)
        return source.factory(argument, num_classes=num_classes, input_shape=shape, model_args=args)
    spec = get_model_spec(name)
    unknown = sorted(set(args) - set(spec.args))
    if unknown and not spec.args:
        raise ValueError(
            f"model {name!r} takes no model_args (got {', '.join(unknown)}); model_args "
            "configure models of a library: "
            + ", ".join(source.usage for source in MODEL_SOURCES.values())
        )
    if unknown:
        raise ValueError(
            f"model {name!r} takes no model_args {', '.join(unknown)}; it takes "
            f"{', '.join(spec.args)}"
        )
    _check_num_classes(num_classes)
    shape = _check_input_shape(name, input_shape, spec.min_size)
    return spec.factory(num_classes=num_classes, input_shape=shape, **args)
