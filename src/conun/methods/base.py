"""What an unlearning method is, and the registry that finds one by name.

A method is a class registered under a lower_snake name. Loop methods (contrastive, finetune,
neggrad, ...) supply only the per-batch objective :meth:`LoopMethod.loss`; the engine
(:mod:`conun.engine.unlearning`, whose contract is :mod:`conun.engine.task`) owns the loop, the
optimizer, the device, the stopping rule and the history. Methods whose algorithm is not a loop
(retrain, one-shot weight edits) implement :meth:`UnlearningMethod.run` themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import ValidationError

from conun.config import (
    ConfigError,
    OptimizerConfig,
    StoppingConfig,
    StrictModel,
    UnlearnConfig,
    format_validation_error,
)
from conun.data.splits import Scenario
from conun.engine.task import (
    HeldOutLogits,
    LossTerms,
    MethodOutcome,
    UnlearningBatch,
    UnlearningTask,
)
from conun.engine.unlearning import run_unlearning_loop
from conun.models.base import Classifier

__all__ = [
    "METHODS",
    "LoopMethod",
    "LossTerms",
    "MethodDefaults",
    "MethodOutcome",
    "NoOptions",
    "UnknownMethodError",
    "UnlearningBatch",
    "UnlearningMethod",
    "UnlearningTask",
    "UnsupportedScenarioError",
    "available_methods",
    "get_method",
    "register_method",
]


class UnknownMethodError(ValueError):
    """A method name that is not registered; the message lists the registered ones."""


class UnsupportedScenarioError(ValueError):
    """A method asked to run on a scenario it is not meant for."""


class NoOptions(StrictModel):
    """Options of a method that has none."""


def _generic_optimizer() -> OptimizerConfig:
    """UnlearnConfig's own optimizer default, for methods that take no optimizer steps."""
    default = UnlearnConfig.model_fields["optimizer"].default
    assert isinstance(default, OptimizerConfig)
    return default.model_copy()


@dataclass(frozen=True)
class MethodDefaults:
    """Everything a method starts from on one scenario: one complete :class:`UnlearnConfig`
    layer (see :meth:`UnlearningMethod.defaults`). Dataset layers and the user's layers then
    override single values of it.

    Attributes:
        batch_size: forget batch size (for one-shot methods, the chunk they batch their work
            in); None for a method that takes no batches (original, retrain).
        options: None (the default): the method's ``Options`` model's field defaults, which
            are the method's own defaults (its paper's, citing their source); an instance of
            that model for a scenario that departs from them, built with only the departing
            fields (the rest keep the field defaults), saying why.
        optimizer: the optimizer of the method's steps; the generic one where it takes none.
        stopping: the stopping rule of a loop method.
    """

    batch_size: int | None
    options: StrictModel | None = None
    optimizer: OptimizerConfig = field(default_factory=_generic_optimizer)
    stopping: StoppingConfig = field(default_factory=StoppingConfig)


class UnlearningMethod:
    """Base class of every method.

    Class attributes:
        name: registry name (set by :func:`register_method`).
        scenarios: the scenarios the method is meant for.
        Options: the pydantic model of the method's hyperparameters; its field defaults are the
            method's default options, the one place they live, each citing its source.
        scenario_defaults: the method's complete defaults per scenario (optimizer, batch size,
            stopping, and options where a scenario departs from the Options field defaults),
            the one place they live; each method cites its sources.
    """

    name: ClassVar[str] = ""
    scenarios: ClassVar[tuple[Scenario, ...]] = ("class", "sample")
    Options: ClassVar[type[StrictModel]] = NoOptions
    # A generic starting point for a method that declares nothing: UnlearnConfig's optimizer
    # and stopping rule, the Options model's defaults, forget batches of 64 / 128.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(batch_size=64),
        "sample": MethodDefaults(batch_size=128),
    }

    def __init__(self, options: StrictModel) -> None:
        self.options = options

    @classmethod
    def scenario_entry(cls, scenario: Scenario) -> MethodDefaults:
        """The method's :class:`MethodDefaults` for ``scenario``.

        Raises:
            UnsupportedScenarioError: the method is not meant for ``scenario``.
        """
        if scenario not in cls.scenarios:
            raise UnsupportedScenarioError(
                f"method {cls.name!r} supports the {' and '.join(cls.scenarios)} scenario(s), "
                f"not {scenario!r}"
            )
        try:
            return cls.scenario_defaults[scenario]
        except KeyError:
            raise TypeError(
                f"method {cls.name!r} supports the {scenario!r} scenario but declares no "
                "defaults for it in scenario_defaults"
            ) from None

    @classmethod
    def default_options(cls, scenario: Scenario) -> StrictModel:
        """The method's options on ``scenario`` when nothing overrides them."""
        options = cls.scenario_entry(scenario).options
        if options is None:
            return cls.Options()
        if not isinstance(options, cls.Options):
            raise TypeError(
                f"method {cls.name!r}: the {scenario!r} defaults hold "
                f"{type(options).__name__}, not its Options model {cls.Options.__name__}"
            )
        return options

    @classmethod
    def defaults(cls, scenario: Scenario) -> dict[str, Any]:
        """The method's complete defaults on ``scenario`` as one :class:`UnlearnConfig` layer:
        ``method``, ``batch_size``, ``optimizer``, ``stopping`` and every option, as plain
        YAML-able data. Dataset and user layers are merged over it.

        Raises:
            UnsupportedScenarioError: the method is not meant for ``scenario``.
        """
        entry = cls.scenario_entry(scenario)
        return {
            "method": cls.name,
            "batch_size": entry.batch_size,
            "optimizer": entry.optimizer.model_dump(mode="json"),
            "stopping": entry.stopping.model_dump(mode="json"),
            "options": cls.default_options(scenario).model_dump(mode="json"),
        }

    @classmethod
    def parse_options(cls, scenario: Scenario, options: Mapping[str, Any]) -> StrictModel:
        """``options`` over the method's defaults for ``scenario``, validated.

        Raises:
            UnsupportedScenarioError: the method is not meant for ``scenario``.
            ConfigError: unknown or invalid options, naming the allowed ones.
        """
        merged = {**cls.default_options(scenario).model_dump(), **options}
        try:
            return cls.Options.model_validate(merged)
        except ValidationError as error:
            allowed = ", ".join(cls.Options.model_fields) or "none"
            raise ConfigError(
                format_validation_error(f"options of method {cls.name!r}", error)
                + f"\n  allowed options: {allowed}"
            ) from None

    @classmethod
    def for_scenario(cls, scenario: Scenario, options: Mapping[str, Any]) -> UnlearningMethod:
        """Build the method for ``scenario`` with ``options`` over its scenario defaults.

        Raises:
            UnsupportedScenarioError: the method is not meant for ``scenario``.
            ConfigError: unknown or invalid options, naming the allowed ones.
        """
        return cls(cls.parse_options(scenario, options))

    def batch_size(self, config: UnlearnConfig, scenario: Scenario) -> int:
        """The forget batch size: the config's, else the method's default for the scenario.

        Raises:
            ConfigError: neither gives one (a method that takes no batches).
        """
        size = config.batch_size or self.scenario_entry(scenario).batch_size
        if size is None:
            raise ConfigError(f"method {self.name!r} takes no forget batches")
        return size

    def run(self, task: UnlearningTask) -> MethodOutcome:
        """Unlearn ``task.split.forget`` from ``task.model``."""
        raise NotImplementedError


class LoopMethod(UnlearningMethod):
    """A method defined by a per-batch objective; the engine runs the loop.

    Subclasses implement :meth:`loss`, say which halves of a batch they use through
    ``uses_forget`` / ``uses_retain`` so that the engine draws only what is needed, and which set
    a pass goes over through ``pass_over``.
    """

    uses_forget: ClassVar[bool] = True
    uses_retain: ClassVar[bool] = True
    #: The set one pass goes over: "forget" (Algorithm 1; a fresh random retain batch per step)
    #: or "retain" (fine-tuning style; a fresh random forget batch per step if used).
    pass_over: ClassVar[Literal["forget", "retain"]] = "forget"
    #: Whether :meth:`loss` returns ``forget_correct`` from every step with a forget batch: the
    #: loop then screens the check before the first step on that step's forward pass.
    reports_forget_correct: ClassVar[bool] = False

    def steps_per_forget_batch(self) -> int:
        """Optimizer steps per forget batch (the paper's omega for contrastive)."""
        return 1

    def retain_batch_size(self, forget_batch_size: int) -> int:
        """Retain samples drawn per step."""
        return forget_batch_size

    def forget_batch_size(self, batch_size: int) -> int:
        """Forget samples drawn per step when a pass goes over the retain set."""
        return batch_size

    def freeze_batchnorm(self) -> bool:
        """Keep BatchNorm running statistics fixed during unlearning."""
        return False

    def frozen_modules(self, model: Classifier) -> list[torch.nn.Module | torch.nn.Parameter]:
        """Submodules (or single parameters) of ``model`` that unlearning leaves as they are: the
        engine excludes their parameters from the optimizer and from autograd for the run (no
        gradient is computed for them, so a frozen first block also saves its backward pass)
        and keeps the modules in eval mode (BatchNorm running statistics used and fixed).
        Called after :meth:`prepare`. Default: none."""
        return []

    def forget_order(self) -> Literal["shuffled", "fixed"]:
        """Order of the batches of a pass: ``shuffled`` (a fresh random order each pass) or
        ``fixed`` (index order every pass, as a sequential data loader gives)."""
        return "shuffled"

    def retain_batches(self) -> Literal["random", "first_batches"]:
        """Retain batch of step k of a forget batch: ``random`` (a fresh random batch each
        step) or ``first_batches`` (the k-th batch of the retain set in index order, the same
        for every forget batch, cut to the forget batch's size)."""
        return "random"

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        """Called once, with ``model`` already on its device, before the optimizer is built:
        compute masks, copy teachers, etc. Draw randomness from ``task.generator`` only."""

    def held_out_logits(self) -> HeldOutLogits | None:
        """The logits :meth:`prepare` computed on held-out samples of the stopping rule's pool
        with the model as it came (the loop's first check reuses them). Default: none."""
        return None

    def trainable_parameters(self, model: Classifier) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (all of the model's by default)."""
        return list(model.parameters())

    def after_step(self, model: Classifier) -> None:
        """Called after every optimizer step, e.g. to put masked weights back exactly (weight
        decay and momentum would otherwise move them even with a zero gradient)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that changes from step to step (saved with a resumable
        state). Masks and teachers are not in it: ``prepare`` rebuilds them from the original
        model when a run resumes. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (called after ``prepare`` on resume)."""
        if state:
            raise ValueError(f"{self.name} keeps no state between steps, got {sorted(state)}")

    def finish(self, model: Classifier) -> Classifier:
        """Called once after the last step, inside the timed region; returns the final model
        (e.g. boundary_expanding prunes its extra output here). Default: ``model`` unchanged."""
        return model

    def outcome_extra(self) -> dict[str, Any]:
        """JSON-serialisable facts of the finished run the record keeps beside the engine's
        (``extra`` of results.json), read after :meth:`finish`. Default: none."""
        return {}

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        """The objective of one step (minimised)."""
        raise NotImplementedError

    def run(self, task: UnlearningTask) -> MethodOutcome:
        return run_unlearning_loop(self, task)


METHODS: dict[str, type[UnlearningMethod]] = {}

MethodT = TypeVar("MethodT", bound=type[UnlearningMethod])


def register_method(name: str) -> Callable[[MethodT], MethodT]:
    """Class decorator: register a method under ``name`` (lower_snake)."""

    def decorate(cls: MethodT) -> MethodT:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name].__name__}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> type[UnlearningMethod]:
    """The method class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; registered: {', '.join(available_methods())}"
        ) from None
