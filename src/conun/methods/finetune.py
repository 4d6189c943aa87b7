"""Fine-tuning baselines on the retain set (loop methods on the shared engine).

- ``finetune`` — "FT": keep training the original on the retain set only, for a fixed number
  of epochs, and let catastrophic forgetting erase the forget set (Golatkar et al., "Eternal
  Sunshine of the Spotless Net", CVPR 2020; Warnecke et al., "Machine Unlearning of Features
  and Labels", NDSS 2023). Minimises ``CE(f(X_r), Y_r)``.
- ``l1_sparse`` — "l1-sparse MU" (Jia et al., "Model Sparsity Can Simplify Machine
  Unlearning", NeurIPS 2023; official code OPTML-Group/Unlearn-Sparse, ``FT_l1`` in
  ``optim/unlearn/FT.py``): fine-tuning on the retain set with a sparsity prior,

      CE(f(X_r), Y_r) + gamma_e * ||theta||_1,    gamma_e = gamma * (1 - e / E),

  where ``e = 0 .. E-1`` is the epoch (pass over the retain set) and ``E`` the number of
  epochs, so the penalty decays linearly from ``gamma`` in the first epoch to ``gamma / E`` in
  the last, constant within an epoch (as in ``FT_iter``). ``||theta||_1`` sums the absolute
  values of *all* parameters (biases and BatchNorm affine parameters included), as their
  ``l1_regularization`` does.

  Optionally the paper's other paradigm, "prune first, then unlearn": with ``prune_ratio > 0``,
  :meth:`L1Sparse.prepare` magnitude-prunes the conv/linear weights globally (the smallest
  ``prune_ratio`` fraction of ``|w|`` over all of them is set to zero; the paper's one-shot
  magnitude pruning, OMP), and every conv/linear weight that is then exactly zero stays
  exactly zero for the whole run: it is put back after every optimizer step, so neither
  momentum nor weight decay can move it. ``prune_ratio = 0`` (the default) is plain
  l1-sparse MU on the dense model.

Defaults (``scenario_defaults`` of both classes, ``L1SparseOptions``) follow the common
protocol of Jia et al. 2023 and Fan et al. 2024 (both official READMEs): SGD, lr 0.01,
momentum 0.9, weight decay 5e-4, batch 256, 10 epochs; gamma = 5e-4 for l1-sparse.

Departures from the authors' code:

- Epochs are passes of our engine over the retain set (``stopping: {rule: none, max_passes:
  E}``); the gamma schedule reads ``E`` from ``stopping.max_passes`` and counts epochs by
  optimizer steps (``ceil(|D_r| / batch)`` per pass). With the ``auto`` stopping rule the run
  may stop early; gamma then simply has not decayed all the way.
- No learning-rate schedule: their MultiStepLR milestones (epochs 91, 136) are never reached
  in a 10-epoch run, so their lr is constant too.
- Pruning is global magnitude pruning of conv *and* linear weights (their OMP pruner works on
  the convolutions of ResNets/VGGs, whose classifier is tiny; on ``small_cnn`` the linear
  layers hold most weights, so leaving them dense would make a sparsity target meaningless).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.splits import Scenario
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    UnlearningBatch,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier


@register_method("finetune")
class Finetune(LoopMethod):
    """Cross-entropy on retain batches only; one pass is one epoch over the retain set."""

    uses_forget: ClassVar[bool] = False
    pass_over: ClassVar[Literal["forget", "retain"]] = "retain"
    # FT, both scenarios: the common protocol of Jia et al. (NeurIPS 2023) and Fan et al. (ICLR
    # 2024), official READMEs (OPTML-Group/Unlearn-Sparse, Unlearn-Saliency): --unlearn FT
    # --unlearn_lr 0.01 --unlearn_epochs 10, SGD momentum 0.9, weight decay 5e-4, batch 256
    # (``--batch_size 256``); a fixed number of epochs.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        scenario: MethodDefaults(
            batch_size=256,
            optimizer=OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=10),
        )
        for scenario in ("class", "sample")
    }

    def retain_loss(self, model: Classifier, batch: UnlearningBatch) -> Tensor:
        """Mean cross-entropy of the retain batch ``(Br, C, H, W)`` / ``(Br,)``; a scalar."""
        assert batch.retain_images is not None and batch.retain_labels is not None
        return F.cross_entropy(model(batch.retain_images), batch.retain_labels)

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        retain_ce = self.retain_loss(model, batch)
        return LossTerms(retain_ce, {"retain_ce": retain_ce.detach()})


class L1SparseOptions(StrictModel):
    """Hyperparameters of l1-sparse MU; defaults are Jia et al.'s (NeurIPS 2023,
    OPTML-Group/Unlearn-Sparse: gamma (``--alpha``) 5e-4 decaying linearly per epoch,
    ``FT_l1``; prune_ratio 0, the dense model), for both scenarios."""

    alpha: float = Field(5e-4, ge=0)
    """gamma: the l1 weight of the first epoch (their ``--alpha``)."""
    no_l1_epochs: int = Field(0, ge=0)
    """Final epochs without the penalty (their ``--no-l1-epochs``); the linear decay then runs
    over the first ``E - no_l1_epochs`` epochs."""
    prune_ratio: float = Field(0.0, ge=0, lt=1)
    """Fraction of conv/linear weights magnitude-pruned (globally) before unlearning; 0 = no
    pruning and no mask (plain l1-sparse MU)."""


def l1_norm(parameters: list[nn.Parameter]) -> Tensor:
    """``sum_i |theta_i|`` over every entry of ``parameters``; a scalar (differentiable)."""
    return torch.stack([parameter.abs().sum() for parameter in parameters]).sum()


def l1_weight(alpha: float, epoch: int, epochs: int, no_l1_epochs: int) -> float:
    """gamma for ``epoch`` (0-based) of ``epochs``: ``alpha * (1 - epoch / (epochs -
    no_l1_epochs))`` during the decay, 0 afterwards (their ``FT_iter``)."""
    decay_epochs = epochs - no_l1_epochs
    if epoch < decay_epochs:
        return alpha * (1 - epoch / decay_epochs)
    return 0.0


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight tensors of every convolution and linear layer (not biases, not BatchNorm)."""
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [
        module.weight
        for module in model.modules()
        if isinstance(module, layers) and isinstance(module.weight, nn.Parameter)
    ]


def magnitude_prune(weights: list[nn.Parameter], ratio: float) -> None:
    """Set the ``floor(ratio * total)`` smallest-magnitude entries over all ``weights`` to 0
    (global one-shot magnitude pruning), in place."""
    magnitudes = torch.cat([weight.detach().abs().flatten() for weight in weights])
    count = int(ratio * magnitudes.numel())
    if count == 0:
        return
    pruned = torch.zeros_like(magnitudes, dtype=torch.bool)
    # topk (not a threshold) so that exactly ``count`` entries go, whatever the ties.
    pruned[torch.topk(magnitudes, count, largest=False).indices] = True
    with torch.no_grad():
        for weight, flags in zip(weights, pruned.split([w.numel() for w in weights]), strict=True):
            weight.masked_fill_(flags.view_as(weight), 0.0)


@register_method("l1_sparse")
class L1Sparse(Finetune):
    """Retain cross-entropy plus a linearly decaying l1 penalty on every parameter; optionally
    on a magnitude-pruned model whose zero weights stay exactly zero."""

    Options: ClassVar[type[StrictModel]] = L1SparseOptions
    # Both scenarios: Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS
    # 2023), OPTML-Group/Unlearn-Sparse README (--unlearn FT_prune --unlearn_lr 0.01
    # --unlearn_epochs 10) and arg_parser defaults (SGD momentum 0.9, weight decay 5e-4, batch
    # 256); gamma (alpha) = 5e-4 decaying linearly per epoch (FT_l1); prune_ratio 0 = dense
    # model (l1-sparse MU without "prune first").
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        scenario: MethodDefaults(
            batch_size=256,
            optimizer=OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=10),
        )
        for scenario in ("class", "sample")
    }

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self._step = 0
        self._steps_per_epoch = 1
        self._epochs = 1
        self._zero_masks: list[tuple[nn.Parameter, Tensor]] = []

    @property
    def settings(self) -> L1SparseOptions:
        assert isinstance(self.options, L1SparseOptions)
        return self.options

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        batch_size = self.batch_size(task.config, task.split.scenario)
        self._step = 0
        self._steps_per_epoch = max(1, math.ceil(task.split.retain.numel() / batch_size))
        self._epochs = task.config.stopping.max_passes
        self._zero_masks = []
        if self.settings.prune_ratio > 0:
            weights = prunable_weights(model)
            magnitude_prune(weights, self.settings.prune_ratio)
            # The mask is every conv/linear entry that is zero now: the freshly pruned ones
            # and any that a prior "prune first" step had already zeroed.
            self._zero_masks = [(weight, weight.detach() == 0) for weight in weights]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step}  # the l1 weight's schedule position

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])

    def current_l1_weight(self) -> float:
        """gamma of the epoch the next step belongs to."""
        epoch = self._step // self._steps_per_epoch
        return l1_weight(self.settings.alpha, epoch, self._epochs, self.settings.no_l1_epochs)

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        retain_ce = self.retain_loss(model, batch)
        gamma = self.current_l1_weight()
        if gamma == 0:
            return LossTerms(retain_ce, {"retain_ce": retain_ce.detach()})
        penalty = l1_norm(list(model.parameters()))
        return LossTerms(
            retain_ce + gamma * penalty,
            {"retain_ce": retain_ce.detach(), "l1": penalty.detach()},
        )

    def after_step(self, model: Classifier) -> None:
        self._step += 1
        # Pruned weights get a cross-entropy gradient and momentum like any other; putting the
        # zero back after each step is what keeps them exactly zero.
        with torch.no_grad():
            for weight, zero in self._zero_masks:
                weight.masked_fill_(zero, 0.0)
