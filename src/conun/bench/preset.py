"""Bench presets: a grid of seeds x forget requests x methods on one dataset and model, as YAML.

A preset lives in ``conun/configs/bench/<name>.yaml`` (or any file given by path)::

    dataset: digits                # registered dataset
    model: small_cnn               # registered model; default: the train preset's
    train_preset: digits           # configs/train/<name>.yaml; default: the dataset's, if any
    train: {epochs: 10}            # TrainConfig keys layered over the train preset
    unlearn: {}                    # UnlearnConfig keys layered over every method's shipped preset
    unlearn_per_method:            # then one method's own keys, options included
      lcodec: {options: {perturbations: 200}}
    device: cpu                    # cpu, cuda, cuda:N, mps or auto; training and unlearning
    requests:                      # each names exactly one of class/samples/fraction
      - class: [5]                 # every training sample of class 5     -> request "class5"
      - samples: 500               # 500 random training samples (seeded) -> request "samples500"
        methods: [retrain, contrastive]   # optional: this request's own method list
        unlearn_per_method:        # optional: layered over unlearn_per_method, this request only
          contrastive: {optimizer: {lr: 1.0e-3}}
    methods: all                   # or a list; all: every method meant for the scenario
    seeds: [0, 1, 2]
    audit: false                   # add the privacy audit (attacks, distances to retrain)

The model here is pydantic (:class:`conun.config.StrictModel`): unknown keys and bad values are
errors naming what is allowed. Checks that need the registries (datasets, models, methods and the
scenarios each method supports) and the unlearning presets of every cell are made by
:func:`conun.bench.grid.plan_bench`, still before any work.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from conun.config import (
    ConfigError,
    StrictModel,
    format_validation_error,
    read_yaml,
    validate_device,
)
from conun.data.errors import DatasetNotFoundError
from conun.data.registry import available_datasets, dataset_info
from conun.data.splits import Scenario
from conun.methods import available_methods
from conun.models.registry import available_models, is_model_name
from conun.workflows.requests import ForgetSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""Preset and request names become directory names: no separators, no leading dot."""

_GRID_KEYS = ("dataset", "model", "seed", "device")
"""TrainConfig keys the grid sets itself; the ``train`` section must not set them."""

_UNLEARN_GRID_KEYS = ("method", "seed", "device", "options")
"""UnlearnConfig keys the grid sets per cell; ``options`` differ per method, so a section shared
by every method cannot hold them."""

_PER_METHOD_GRID_KEYS = ("method", "seed", "device")
"""UnlearnConfig keys the grid sets per cell that ``unlearn_per_method`` must not set."""


class BenchPresetError(ConfigError):
    """A bench preset that cannot be run; the message names the key and what is allowed."""


class RequestSpec(StrictModel):
    """One forget request of the grid: exactly one of ``class``, ``samples``, ``fraction``.

    Attributes:
        name: directory and table name; default derived from the request (``class5``,
            ``class3-5``, ``samples500``, ``fraction0.05``).
        classes: forget every training sample of these classes (YAML key ``class``).
        samples: forget this many random training samples, drawn with the cell's seed.
        fraction: forget this fraction of the training samples, drawn with the cell's seed.
        methods: this request's methods, replacing the grid's list (``all`` or names).
        unlearn_per_method: method name -> UnlearnConfig keys layered over the preset's
            ``unlearn_per_method`` for this request's cells only (a setting chosen for one
            scenario: a class request's optimizer, say, that the sample request does not share).
    """

    name: str | None = None
    classes: list[int] | None = Field(None, alias="class")
    samples: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, lt=1)
    methods: Literal["all"] | list[str] | None = None
    unlearn_per_method: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"request name {value!r} must be letters, digits, '_', '.' or '-' "
                "(it names a directory)"
            )
        return value

    @field_validator("classes")
    @classmethod
    def _valid_classes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one class, e.g. class: [5]")
        if any(c < 0 for c in value) or len(set(value)) != len(value):
            raise ValueError(f"classes must be distinct and >= 0, got {value}")
        return sorted(value)

    @field_validator("unlearn_per_method")
    @classmethod
    def _per_method_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return check_per_method_sections(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> RequestSpec:
        given = [
            key
            for key, value in (
                ("class", self.classes),
                ("samples", self.samples),
                ("fraction", self.fraction),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a request names exactly one of class: [C, ...], samples: N or fraction: F; "
                f"got {', '.join(given) if given else 'none'}"
            )
        return self

    @property
    def label(self) -> str:
        """The request's name: given, or derived from what it forgets."""
        if self.name is not None:
            return self.name
        if self.classes is not None:
            return "class" + "-".join(str(c) for c in self.classes)
        if self.samples is not None:
            return f"samples{self.samples}"
        return f"fraction{self.fraction:g}"

    @property
    def scenario(self) -> Scenario:
        """``"class"`` for a class request, else ``"sample"``."""
        return "class" if self.classes is not None else "sample"

    def forget_spec(self) -> ForgetSpec:
        """The request as the workflows' :class:`~conun.workflows.requests.ForgetSpec`."""
        return ForgetSpec(
            classes=tuple(self.classes or ()), num_samples=self.samples, fraction=self.fraction
        )


class BenchPreset(StrictModel):
    """A bench grid: seeds x requests x methods on one dataset and model (module docstring).

    Attributes:
        name: the preset's name (default: its file's stem); names the default output directory.
        description: free text, shown in the tables' title.
        dataset: registered dataset.
        model: registered model; None keeps the train preset's.
        train_preset: ``configs/train/<name>.yaml`` under ``train``; None takes the dataset's.
        train: TrainConfig keys layered over the train preset (not dataset/model/seed/device).
        unlearn: UnlearnConfig keys layered over every method's shipped preset (not
            method/seed/device/options).
        unlearn_per_method: method name -> UnlearnConfig keys layered over that method's
            shipped preset after ``unlearn`` (``options`` allowed; not method/seed/device).
        device: where training and unlearning run (``auto``: CUDA when available).
        requests: the forget requests.
        methods: ``all`` (every registered method meant for a request's scenario) or names.
        seeds: the seeds; each trains its own original and draws its own random requests.
        audit: add the privacy audit to every cell (distances need ``retrain`` in the grid).
        keep_weights: methods whose cells keep their unlearned checkpoint (``conun report``
            draws the paper's Figure 1 from them); retrain's is always kept under ``audit``.
    """

    name: str = "bench"
    description: str = ""
    dataset: str
    model: str | None = None
    train_preset: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    unlearn: dict[str, Any] = Field(default_factory=dict)
    unlearn_per_method: dict[str, dict[str, Any]] = Field(default_factory=dict)
    device: str = "cpu"
    requests: list[RequestSpec] = Field(min_length=1)
    methods: Literal["all"] | list[str] = "all"
    seeds: list[int] = Field(min_length=1)
    audit: bool = False
    keep_weights: list[str] = Field(
        default_factory=lambda: ["retrain", "contrastive", "neggrad", "finetune"]
    )

    @field_validator("keep_weights")
    @classmethod
    def _known_kept_methods(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(available_methods()))
        if unknown:
            raise ValueError(
                f"keep_weights names unknown method(s) {unknown}; registered: "
                f"{', '.join(available_methods())}"
            )
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"preset name {value!r} must be letters, digits, '_', '.' or '-' "
                "(it names the default output directory)"
            )
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in available_datasets():
            raise ValueError(
                f"unknown dataset {value!r}; allowed: {', '.join(available_datasets())}"
            )
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and not is_model_name(value):
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(available_models())}")
        return value

    @field_validator("train_preset")
    @classmethod
    def _known_train_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in available_presets("train"):
            raise ValueError(
                f"unknown train preset {value!r}; shipped: {', '.join(available_presets('train'))}"
            )
        return value

    @field_validator("train")
    @classmethod
    def _train_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _reject_grid_keys(value, _GRID_KEYS)

    @field_validator("unlearn")
    @classmethod
    def _unlearn_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _reject_grid_keys(value, _UNLEARN_GRID_KEYS)

    @field_validator("unlearn_per_method")
    @classmethod
    def _per_method_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return check_per_method_sections(value)

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        return validate_device(value)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        return check_method_names(value)

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, value: list[int]) -> list[int]:
        return check_seeds(value)

    @model_validator(mode="after")
    def _consistent(self) -> BenchPreset:
        labels = [request.label for request in self.requests]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                f"requests {', '.join(repeated)} appear twice; give each a distinct `name:`"
            )
        for request in self.requests:
            if request.methods is not None:
                check_method_names(request.methods)
        try:
            num_classes = dataset_info(self.dataset).num_classes
        except DatasetNotFoundError:
            # An image folder (mini-imagenet) not in the default data directory: a preset is
            # valid without its data, and run_bench checks every request on the data itself
            # (check_requests) before any work.
            return self
        for request in self.requests:
            bad = [c for c in request.classes or () if c >= num_classes]
            if bad:
                raise ValueError(
                    f"request {request.label}: class {bad} is not in {self.dataset}: "
                    f"classes are 0..{num_classes - 1}"
                )
        return self


def _reject_grid_keys(section: dict[str, Any], forbidden: tuple[str, ...]) -> dict[str, Any]:
    clash = [key for key in forbidden if key in section]
    if clash:
        raise ValueError(
            f"{', '.join(clash)} cannot be set here: the grid sets them per cell (use the "
            "preset's top-level dataset, model, device and seeds keys; a method's options go in "
            "unlearn_per_method.<method>.options)"
        )
    return section


def check_per_method_sections(value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``value`` if it names registered methods only and sets no key the grid sets per cell."""
    unknown = sorted(set(value) - set(available_methods()))
    if unknown:
        raise ValueError(
            f"unlearn_per_method names unknown method(s) {', '.join(unknown)}; registered: "
            f"{', '.join(available_methods())}"
        )
    for section in value.values():
        _reject_grid_keys(section, _PER_METHOD_GRID_KEYS)
    return value


def check_method_names(value: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
    """``value`` if it is ``all`` or a list of distinct registered method names."""
    if value == "all":
        return value
    if not value:
        raise ValueError("methods: give `all` or at least one method")
    unknown = [name for name in value if name not in available_methods()]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(available_methods())} "
            "(or `all`)"
        )
    if len(set(value)) != len(value):
        raise ValueError(f"methods are listed twice: {value}")
    return value


def check_seeds(value: list[int]) -> list[int]:
    """``value`` if its seeds are distinct and >= 0."""
    if not value:
        raise ValueError("give at least one seed")
    if any(not 0 <= seed < 2**63 for seed in value) or len(set(value)) != len(value):
        raise ValueError(f"seeds must be distinct integers >= 0 and < 2**63, got {value}")
    return value


def parse_seeds(text: str) -> list[int]:
    """Seeds from the command line: ``"0,1,2"`` or ``"0 1 2"``.

    Raises:
        BenchPresetError: not a list of distinct integers >= 0.
    """
    parts = [part for part in re.split(r"[,\s]+", text.strip()) if part]
    try:
        return check_seeds([int(part) for part in parts])
    except ValueError:
        raise BenchPresetError(
            f"--seeds {text!r}: give distinct integers >= 0 separated by commas, e.g. 0,1,2"
        ) from None


def available_presets(kind: str = "bench") -> list[str]:
    """Names of the shipped presets ``conun/configs/<kind>/*.yaml``, sorted."""
    folder = resources.files("conun").joinpath("configs", *kind.split("/"))
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def load_bench_preset(preset: str | Path) -> BenchPreset:
    """Read and validate a bench preset: a shipped name (``smoke``) or a YAML file's path.

    Raises:
        BenchPresetError: no such preset (the shipped ones are listed), or an invalid one (one
            line per problem: ``key.sub: message``).
    """
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        source = candidate
    else:
        folder = resources.files("conun").joinpath("configs", "bench", f"{preset}.yaml")
        if not folder.is_file():
            raise BenchPresetError(
                f"unknown bench preset {str(preset)!r}; shipped: "
                f"{', '.join(available_presets())} (or give a path to a .yaml file)"
            )
        source = Path(str(folder))
    try:
        data = read_yaml(source)
    except ConfigError as error:
        raise BenchPresetError(str(error)) from None
    data.setdefault("name", source.stem)
    try:
        return BenchPreset.model_validate(data)
    except ValidationError as error:
        raise BenchPresetError(format_validation_error(f"bench preset {source}", error)) from None


__all__ = [
    "BenchPreset",
    "BenchPresetError",
    "RequestSpec",
    "available_presets",
    "load_bench_preset",
    "parse_seeds",
]
