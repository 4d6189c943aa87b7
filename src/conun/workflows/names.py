"""Registered names in a config, checked at the start of every workflow, before any data is
loaded. Config sits below the registries (data, models, methods), so it holds plain strings and
the workflows, which sit above all of them, check the names."""

from __future__ import annotations

from conun.config import ConfigError, TrainConfig
from conun.data.registry import available_datasets, is_dataset_name
from conun.methods import available_methods
from conun.models.registry import MODEL_SOURCES, available_models, is_model_name


def check_train_names(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the allowed values if the dataset or model is unknown."""
    problems = []
    if not is_dataset_name(config.dataset):
        problems.append(
            f"  dataset: unknown dataset {config.dataset!r}; allowed: "
            + ", ".join([*available_datasets(), "folder:<dir>"])
        )
    if not is_model_name(config.model):
        problems.append(
            f"  model: unknown model {config.model!r}; allowed: "
            + ", ".join([*available_models(), *(source.usage for source in MODEL_SOURCES.values())])
        )
    if problems:
        raise ConfigError("\n".join(["invalid TrainConfig:", *problems]))


def check_method_name(name: str) -> None:
    """Raise :class:`ConfigError` listing the registered methods if ``name`` is not one."""
    if name not in available_methods():
        raise ConfigError(
            f"invalid UnlearnConfig:\n  method: unknown method {name!r}; registered: "
            + ", ".join(available_methods())
        )
