"""Configuration: typed, validated models built from YAML presets plus command-line overrides.

Layering, last wins: the model defaults below, the dataset's preset (``conun/configs/``), a user's
YAML file, explicit command-line flags, then ``--set key.sub=value`` overrides. OmegaConf merges
the layers and parses the dotted overrides; pydantic validates the result, so that an unknown key
or a bad value is an error naming what is allowed, raised before any work is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors; assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimizerConfig(StrictModel):
    """SGD (the paper's choice) or Adam(W)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False


class RunSettings(StrictModel):
    """Where and how reproducibly a run executes; shared by training and unlearning."""

    seed: int = Field(0, ge=-(2**63), lt=2**63)
    """Any integer torch and NumPy can be seeded with (a 64-bit one)."""
    device: str = "cpu"
    channels_last: bool = True
    eval_batch_size: int = Field(256, ge=1)
    """Images per forward pass when evaluating (the stopping rule's checks included). 256: on
    2 CPU cores small_cnn evaluates 1,012 Fashion-MNIST images in 21 ms at 256 per batch against
    38 ms at 1,024 (channels_last; experiments/results/contrastive-time-ratio-sample.md); raise it
    on a GPU."""

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        return validate_device(value)


class TrainConfig(RunSettings):
    """How the original model (and, on the same recipe, the retrained reference) is trained."""

    dataset: str = "digits"
    """A registered dataset name; checked by the workflow before any data is loaded
    (:func:`conun.workflows.names.check_train_names`), since the registries sit above config."""
    model: str = "small_cnn"
    model_args: dict[str, Any] = {}
    """Keyword arguments of a library model's constructor (``timm:``, ``torchvision:``, ``hf:``),
    e.g. ``{img_size: 28, patch_size: 4, depth: 6, embed_dim: 192}`` for a small timm ViT."""
    init: str | None = None
    """A safetensors state dict the model starts from instead of its fresh initialisation."""
    image_size: int | None = Field(None, ge=1)
    """Side of the square images a folder dataset (``folder:<dir>``) is resized to; default 32."""
    data_dir: str | None = None
    download: bool = False
    """Try to download missing dataset files (off by default: runs must not need the network)."""
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: bool = False
    validation_fraction: float = Field(0.1, ge=0, le=0.5)
    max_train_samples: int | None = Field(None, ge=2)


class StoppingConfig(StrictModel):
    """When an unlearning loop stops (Lee et al. 2025, Algorithm 1; docs/method.md)."""

    rule: Literal["auto", "none"] = "auto"
    """``auto``: the scenario's rule (class: forget accuracy <= 1/C; sample: forget accuracy <=
    held-out accuracy). ``none``: run ``max_passes`` passes."""
    sample_rule: Literal["accuracy", "indistinguishable"] = "accuracy"
    """Sample scenario only: what ``auto`` stops on. ``accuracy`` (the paper): forget accuracy
    <= held-out accuracy. ``indistinguishable``: the forget subset can no longer be told from
    the held-out subset, within the sampling noise of their sizes, on either statistic a
    membership attack reads: its accuracy is at most ``z * se`` above the held-out accuracy
    (``se`` the standard error of the difference of two proportions, pooled) and the AUC of
    "lower loss = seen in training" between the two subsets is at most ``0.5 + z * sigma``
    (``sigma`` the AUC's standard deviation when both come from one distribution: Mann-Whitney);
    ``z`` the two-sided normal quantile of ``confidence``. Below the band (the forget set looks
    *less* familiar than unseen data) also stops: going on cannot bring it back."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Confidence of the ``indistinguishable`` rule's bands (0.95: z = 1.96)."""
    eval_set: Literal["validation", "test"] = "validation"
    """Held-out data the rule compares against: the validation split carved from train
    (default, keeps the test set clean) or the test set (``test``, as the paper does)."""
    class_checks_forget: bool = True
    """Class rule only: also require the accuracy on a subset of the forget set to be <= 1/C.
    The paper checks the held-out samples of the class alone (``false``); with a small held-out
    set (digits: ~15 validation samples per class) that estimate stopped runs with a quarter of
    the forgotten class still recognised (measured), and the forget-set check costs one more
    small evaluation only."""
    class_accuracy: float | None = Field(None, gt=0, lt=1)
    """Class rule only: the accuracy at or below which the forgotten classes count as forgotten.
    None: 1/C, chance level (the paper). A lower bound (e.g. 0.01) asks for the class to be
    gone, not merely at chance: with checks inside the pass, a class stopped at chance still had
    2-8% of its training samples recognised on Fashion-MNIST (measured)."""
    eval_size: int = Field(512, ge=1)
    """Samples per evaluation subset, so that a check costs a small fraction of the run."""
    held_out_per_forget: float | None = Field(2.0, gt=0)
    """Sample scenario: the held-out subset holds at most this many times the forget subset's
    samples (and at most ``eval_size``). The rule's bands shrink as ``sqrt(1/n_forget +
    1/n_held_out)``: twice the forget subset keeps them within 23% of an infinite held-out
    subset's (``sqrt(1.5)``) and a check of a 100-sample request at 300 images instead of 612.
    None: ``eval_size`` samples, whatever the request."""
    screen_size: int | None = Field(128, ge=1)
    """The check before the first step evaluates this many samples of the forget subset first,
    the rest only if they do not already show the rule failing (a forget accuracy clearly
    above its bound: ``conun.engine.stopping.screen_fails``). A trained model nearly always
    fails there; on a sub-second request that check was half of the checks' cost. None: the
    whole forget subset at once."""
    check_every: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
    """When the rule is checked, besides once before the first step. ``auto``: inside the pass,
    every k batches, the smallest k that keeps the checks' cost within ``check_budget`` of the
    training steps' (estimated from images: a check evaluates its two subsets once, a batch
    trains on ``steps x batch`` images at ~3 forward passes each). An integer: every that many
    batches. ``None``: after each pass only (the paper's Algorithm 1)."""
    check_budget: float = Field(0.05, gt=0, le=1)
    """``check_every = auto``: the checks' share of the run to aim for."""
    max_passes: int = Field(20, ge=1)
    """Upper bound on passes over the forget set."""


class UnlearnConfig(RunSettings):
    """How a model is unlearned: the method, its options, the optimizer and the stopping rule."""

    method: str = "contrastive"
    """A registered method name; checked by the workflow before any data is loaded."""
    batch_size: int | None = Field(None, ge=1)
    """Forget batch size; None takes the method's default for the scenario."""
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, momentum=0.9, weight_decay=0.0)
    stopping: StoppingConfig = StoppingConfig()
    options: dict[str, Any] = Field(default_factory=dict)
    """Method hyperparameters, validated by the method's own options model."""


def validate_device(value: str) -> str:
    """Accept ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; reject anything else early."""
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except RuntimeError as error:
        raise ValueError(
            f"unknown device {value!r}; allowed: cpu, cuda, cuda:N, mps, auto"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {value!r} asked for but CUDA is not available; use cpu or auto")
    return value


ConfigT = TypeVar("ConfigT", bound=StrictModel)


def preset_path(kind: str, name: str) -> Path | None:
    """The shipped preset ``configs/<kind>/<name>.yaml``, or None if there is none."""
    candidate = resources.files("conun").joinpath("configs", *kind.split("/"), f"{name}.yaml")
    return Path(str(candidate)) if candidate.is_file() else None


MAX_CONFIG_BYTES = 1 << 20
"""Largest config or preset file read (1 MiB; the shipped ones are a few hundred bytes)."""
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of mappings and lists in a config (the shipped ones nest 3 deep)."""


class _RefusedYamlError(yaml.YAMLError):
    """YAML that is valid but not accepted in a config (see :class:`_ConfigLoader`)."""


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader (plain data, no Python objects), stricter still for configs:

    - no aliases: ``*name`` can expand a few hundred bytes into billions of nodes (an "alias
      bomb"), and a config has no need to repeat itself;
    - at most :data:`MAX_CONFIG_DEPTH` levels of nesting (the composer recurses per level: a
      deeper document would end in a RecursionError);
    - no key twice in one mapping (PyYAML keeps the last silently, hiding a mistake).
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _RefusedYamlError(
                f"line {event.start_mark.line + 1}: aliases (*{event.anchor}) are not allowed; "
                "write the value out"
            )
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                mark = self.peek_event().start_mark
                raise _RefusedYamlError(
                    f"line {mark.line + 1}: nested more than {MAX_CONFIG_DEPTH} levels deep"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _RefusedYamlError(
                        f"line {key_node.start_mark.line + 1}: key {key_node.value!r} is given "
                        "twice in one mapping"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse config YAML with :class:`_ConfigLoader`: plain data only, no aliases, bounded
    nesting, no duplicate keys.

    Args:
        text: the YAML document.
        source: what to call it in errors (``config file x.yaml``).

    Raises:
        ConfigError: one line naming ``source`` and what is wrong.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as error:
        # Includes Python tags (!!python/object...), which the safe loader never constructs.
        detail = " ".join(str(error).split())
        raise ConfigError(f"{source} is not plain YAML data: {detail}") from None


def read_text_file(path: str | Path, what: str, *, limit: int = MAX_CONFIG_BYTES) -> str:
    """Read a small UTF-8 text file a user named (a config, a preset), checked first.

    Args:
        path: the file.
        what: what to call it in errors (``config file``, ``bench preset``).
        limit: the largest size accepted, in bytes.

    Raises:
        ConfigError: missing, not a regular file, too large, or not UTF-8 text (naming it).
    """
    source = Path(path)
    if not source.exists():
        raise ConfigError(f"{what} {source} does not exist")
    if not source.is_file():
        raise ConfigError(f"{what} {source} is not a regular file")
    size = source.stat().st_size
    if size > limit:
        raise ConfigError(f"{what} {source} is {size} bytes; at most {limit} are accepted")
    try:
        return source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{what} {source} is not UTF-8 text (byte {error.start} cannot be decoded)"
        ) from None
    except OSError as error:
        raise ConfigError(f"{what} {source} cannot be read: {error.strerror}") from None


def check_no_interpolation(value: Any, where: str, key: str = "") -> None:
    """Refuse OmegaConf interpolations (``${...}``) anywhere in a config layer.

    They would read environment variables (``${oc.env:HOME}``) or other keys into the
    config; a value is always written out instead.

    Raises:
        ConfigError: naming ``where`` and the key holding one.
    """
    if isinstance(value, str) and "${" in value:
        shown = f" at {key}" if key else ""
        raise ConfigError(
            f"{where}: {value!r}{shown} is an interpolation (${{...}}), which configs do not "
            "support; write the value itself"
        )
    if isinstance(value, Mapping):
        for name, item in value.items():
            check_no_interpolation(item, where, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            check_no_interpolation(item, where, f"{key}[{number}]")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a config file: UTF-8 text of at most
    :data:`MAX_CONFIG_BYTES`, parsed by :func:`load_yaml_text` (plain data only, no aliases,
    bounded nesting, no duplicate keys, no interpolations)."""
    source = Path(path)
    loaded = load_yaml_text(read_text_file(source, "config file"), f"config file {source}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {source} must hold a mapping, got {type(loaded).__name__}")
    check_no_interpolation(loaded, f"config file {source}")
    return loaded


def build_config(
    model: type[ConfigT],
    layers: Iterable[Mapping[str, Any] | None] = (),
    overrides: Sequence[str] = (),
) -> ConfigT:
    """Merge config layers and ``key.sub=value`` overrides, then validate.

    Args:
        model: the config class, e.g. :class:`TrainConfig`.
        layers: mappings applied in order over the class defaults; None entries are skipped.
        overrides: dotted ``key=value`` strings (values parsed as YAML), applied last.

    Returns:
        The validated config.

    Raises:
        ConfigError: unknown keys, malformed overrides or invalid values, with the allowed values.
    """
    merged: Any = OmegaConf.create(model().model_dump())
    layers = list(layers)
    for layer in layers:
        check_no_interpolation(layer, "config")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.sub=value")
        check_no_interpolation(override, f"--set {override}")
    for layer in layers:
        if layer:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(layer)))
    if overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    plain = OmegaConf.to_container(merged, resolve=False)
    try:
        return model.model_validate(plain)
    except ValidationError as error:
        raise ConfigError(format_validation_error(model.__name__, error)) from None


def format_validation_error(name: str, error: ValidationError) -> str:
    """One line per problem: ``key.sub: message``."""
    lines = [f"invalid {name}:"]
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(root)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def config_to_yaml(config: StrictModel) -> str:
    """The resolved config as YAML, as written into every run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def build_train_config(
    dataset: str,
    layers: Iterable[Mapping[str, Any] | None] = (),
    overrides: Sequence[str] = (),
    *,
    preset: str | None = None,
) -> TrainConfig:
    """A :class:`TrainConfig` for ``dataset``.

    Layers, last wins: the shipped preset ``configs/train/<preset>.yaml`` (default: the
    dataset's, where there is one), ``{"dataset": dataset}``, ``layers``, then ``overrides``.
    The CLI, the demo, the bench and the scripts build their training configs here, so that one
    recipe gets the same settings whichever way it comes.

    Raises:
        ConfigError: ``preset`` is not a shipped train preset, or the layers do not validate.
    """
    path = preset_path("train", preset or dataset)
    if preset is not None and path is None:
        raise ConfigError(f"unknown train preset {preset!r}")
    base = read_yaml(path) if path is not None else None
    return build_config(TrainConfig, [base, {"dataset": dataset}, *layers], overrides)
