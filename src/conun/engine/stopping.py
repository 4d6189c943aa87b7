"""Stopping rules of contrastive unlearning (Lee et al., IJCAI 2025), evaluated on small subsets so
checks stay cheap.

- class: stop when the accuracy on held-out samples of the forgotten classes is <= 1/C (and, by
  default, the accuracy on a subset of the forget set too: ``stopping.class_checks_forget``);
- sample: stop when the accuracy on (a subset of) the forget set is <= the accuracy on held-out
  data: going further would make forgotten samples look *less* familiar than unseen data, which
  is itself a membership signal.

"Held-out" is the validation split carved from train before the original was trained (default),
or the test set (``stopping.eval_set = "test"``, the paper's choice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from conun.config import StoppingConfig
from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.evaluation.accuracy import accuracy
from conun.models.base import Classifier


class StoppingSetupError(ValueError):
    """The stopping rule cannot be evaluated with the data at hand."""


@dataclass(frozen=True)
class EvaluationSets:
    """The small sets a stopping rule looks at.

    Attributes:
        forget: a random subset of the forget set ``D_u_tr`` (recorded in the history).
        held_out: held-out samples the rule compares against: of the forgotten classes in the
            class scenario (``D_u_ts``'s stand-in), of all classes in the sample scenario.
    """

    forget: ArrayDataset
    held_out: ArrayDataset


@dataclass(frozen=True)
class RuleCheck:
    """One evaluation of the rule."""

    stop: bool
    forget_acc: float
    held_out_acc: float
    threshold: float

    def to_dict(self) -> dict[str, float | bool]:
        return dataclasses.asdict(self)


def _random_subset(
    data: ArrayDataset, indices: torch.Tensor, size: int, generator: torch.Generator
) -> ArrayDataset:
    if indices.numel() > size:
        indices = indices[torch.randperm(indices.numel(), generator=generator)[:size]]
    return data.subset(indices)


def build_evaluation_sets(
    data: DatasetBundle,
    split: ForgetRetainSplit,
    config: StoppingConfig,
    *,
    generator: torch.Generator,
) -> EvaluationSets:
    """Draw the evaluation subsets once per run (seeded).

    Raises:
        StoppingSetupError: ``eval_set="validation"`` but the model was trained without a
            validation split, or no held-out sample of a forgotten class exists.
    """
    if config.eval_set == "validation":
        if split.validation.numel() == 0:
            raise StoppingSetupError(
                "the stopping rule's evaluation set is 'validation' but this model was trained "
                "without a validation split (validation_fraction=0); train with a validation "
                "split, or set stopping.eval_set=test (the paper's choice)"
            )
        pool, pool_indices = data.train, split.validation
    else:
        pool, pool_indices = data.test, torch.arange(len(data.test))
    if split.scenario == "class":
        in_classes = torch.isin(pool.labels[pool_indices], torch.tensor(split.classes))
        pool_indices = pool_indices[in_classes]
        if pool_indices.numel() == 0:
            raise StoppingSetupError(
                f"the {config.eval_set} set has no sample of the forgotten classes "
                f"{list(split.classes)}: the class rule cannot be evaluated"
            )
    return EvaluationSets(
        forget=_random_subset(data.train, split.forget, config.eval_size, generator),
        held_out=_random_subset(pool, pool_indices, config.eval_size, generator),
    )


def check_rule(
    model: Classifier,
    sets: EvaluationSets,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    batch_size: int,
    channels_last: bool,
    checks_forget: bool = True,
) -> RuleCheck:
    """Evaluate the scenario's rule on the evaluation sets.

    ``checks_forget`` (class scenario only): the forget subset must be at chance too."""
    forget_acc = accuracy(model, sets.forget, batch_size=batch_size, channels_last=channels_last)
    held_out_acc = accuracy(
        model, sets.held_out, batch_size=batch_size, channels_last=channels_last
    )
    assert forget_acc is not None and held_out_acc is not None  # both sets are non-empty
    if split.scenario == "class":
        threshold = 1.0 / num_classes
        stop = held_out_acc <= threshold and (not checks_forget or forget_acc <= threshold)
        return RuleCheck(stop, forget_acc, held_out_acc, threshold)
    return RuleCheck(forget_acc <= held_out_acc, forget_acc, held_out_acc, held_out_acc)
