"""Teacher-student unlearning baselines: SCRUB and the incompetent ("bad") teacher.

Both keep a frozen copy of the original as a teacher and distil from it with a KL divergence;
they differ in what the student is pushed towards on the forget set.

- ``scrub`` — SCRUB (Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded
  Machine Unlearning", NeurIPS 2023; official code meghdadk/SCRUB). The student (the original,
  updated in place) moves *away* from the teacher on the forget set and stays close to it on the
  retain set, alternating per epoch (their ``train_distill`` in
  ``thirdparty/repdistiller/helper/loops.py``):

  for epoch = 1 .. ``epochs``:
      if epoch <= ``msteps``: one pass over the forget set, each batch minimising
          ``-KL_T(teacher || student)`` (the "max-step");
      one pass over the retain set, each batch minimising
          ``gamma * CE(student, Y_r) + alpha * KL_T(teacher || student)`` (the "min-step"),

  with ``KL_T`` their ``DistillKL``: ``T^2 / B * sum_i KL(softmax(t_i / T) || softmax(s_i / T))``.
  One optimizer (SGD) serves both steps, and the learning rate decays by ``lr_decay_rate`` for
  every milestone in ``lr_decay_epochs`` that the epoch has passed (their
  ``adjust_learning_rate``).

- ``bad_teacher`` — "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks using an
  Incompetent Teacher" (Chundawat, Tarun, Mandal and Kankanhalli, AAAI 2023; official code
  vikram2000b/bad-teaching-unlearning, ``unlearn.py``). Two frozen teachers: the competent one
  (the original) and an incompetent one (a randomly initialised network of the same
  architecture). The student (the original) minimises, over mixed batches of forget and retain
  samples, the KL divergence to the incompetent teacher's outputs on forget samples and to the
  competent teacher's outputs on retain samples (their ``UnlearnerLoss``):

      mean_{i, c} p_i,c * (log p_i,c - log softmax(s_i / T)_c),
      p_i = softmax(u_i / T) for a forget sample, softmax(f_i / T) for a retain sample,

  the mean taken over all ``B * C`` entries (``F.kl_div``'s default reduction in their code).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from conun.config import StrictModel, UnlearnConfig
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model, to_device
from conun.distributed.group import context, shard
from conun.engine.stopping import EvaluationSets, build_evaluation_sets, check_rule
from conun.engine.training import make_optimizer, take_step
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodOutcome,
    UnlearningBatch,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier
from conun.models.registry import available_models, build_model

logger = logging.getLogger(__name__)


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """SCRUB's ``DistillKL`` (from RepDistiller): ``KL(teacher || student)`` at temperature T.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, treated as a fixed target (no gradient flows into it).
        temperature: T > 0; the result is scaled by ``T^2`` so that gradient magnitudes do not
            shrink with T (Hinton et al.'s convention, kept by their code).

    Returns:
        Scalar ``T^2 / B * sum_{i, c} p_t log(p_t / p_s)`` with ``p = softmax(logits / T)``.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    summed = F.kl_div(log_student, teacher, reduction="sum")
    return summed * temperature**2 / student_logits.shape[0]


def scrub_learning_rate(
    epoch: int, base_lr: float, decay_epochs: tuple[int, ...], decay_rate: float
) -> float:
    """Their ``adjust_learning_rate``: ``base * rate ** #{m in decay_epochs : epoch > m}``.

    Args:
        epoch: 1-based epoch number.
    """
    passed = sum(1 for milestone in decay_epochs if epoch > milestone)
    return base_lr * decay_rate**passed


def epoch_batches(indices: Tensor, batch_size: int, *, generator: torch.Generator) -> list[Tensor]:
    """One epoch of ``indices`` in a random order, cut into ``(B,)`` index batches, with a last
    batch of a single sample merged into the one before it: BatchNorm in train mode cannot
    normalise one sample (their CIFAR set sizes never produce such a batch)."""
    # Under torchrun every process needs 2 samples of the last batch (one process: unchanged).
    return list(
        shuffled_batches(
            indices,
            batch_size,
            generator=generator,
            no_singleton=True,
            min_last=2 * context().world_size,
        )
    )


def freeze(module: torch.nn.Module) -> None:
    """Eval mode (BatchNorm uses and keeps its running statistics) and no gradients, so that
    neither the loss nor an optimizer can change the module."""
    module.eval()
    module.requires_grad_(False)


class ScrubOptions(StrictModel):
    """Hyperparameters of SCRUB; defaults are the authors' class-unlearning settings
    (``large_scale_unlearning.ipynb``); the sample scenario's come from ``scenario_defaults``."""

    alpha: float = Field(0.001, ge=0)
    """Weight of ``KL_T(teacher || student)`` on the retain set in the min-step."""
    gamma: float = Field(0.99, ge=0)
    """Weight of the retain cross-entropy in the min-step."""
    temperature: float = Field(4.0, gt=0)
    """``kd_T`` of both KL terms."""
    msteps: int = Field(2, ge=0)
    """Epochs (the first ones) that begin with a max-step pass over the forget set."""
    epochs: int = Field(3, ge=1)
    """``sgda_epochs``: min-step passes over the retain set."""
    retain_batch_size: int = Field(256, ge=1)
    """Retain samples per min-step (the forget batch size is ``batch_size`` of the config)."""
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)
    """Milestones of the step decay: epochs after each of them use ``lr * lr_decay_rate``."""
    lr_decay_rate: float = Field(0.1, gt=0, le=1)


@register_method("scrub")
class Scrub(UnlearningMethod):
    """SCRUB: alternate max-steps on the forget set and min-steps on the retain set against a
    frozen teacher.

    :meth:`run` is written here rather than through the shared engine because the schedule is
    not one of the engine's: an epoch is a pass over the forget set with one objective followed
    by a pass over the retain set with another (different batch sizes, the max-steps only in the
    first ``msteps`` epochs), and the learning rate follows a per-epoch step decay. It reuses the
    engine's helpers (device placement, batching, optimizer, stopping-rule checks) and times
    itself like the engine: teacher copy and optimisation, checks included.

    The stopping rule is checked after every epoch (for the history). ``stopping.rule: auto``
    ends the schedule after the first epoch at which the scenario's rule holds; the shipped
    presets use ``rule: none``, i.e. the paper's fixed number of epochs. ``stopping.max_passes``
    is not used (``epochs`` is the schedule's length).

    Departures from their code: the teacher is always in eval mode and frozen (theirs is too,
    through ``module_list[-1].eval()`` and ``torch.no_grad``); their optional SGDA weight
    averaging (``smoothing``, 0 in their SCRUB settings) and the ``beta`` term (identically 0
    for ``distill='kd'``, the only mode SCRUB uses) are left out; their checkpoint "rewinding"
    (SCRUB+R, picking the epoch whose forget error is closest to a held-out error) is not done;
    batches come from the run's seeded generator, not the global RNG; a last batch of one sample
    is merged into the previous one (BatchNorm cannot train on a single sample).
    """

    Options: ClassVar[type[StrictModel]] = ScrubOptions
    # Sample (selective) unlearning: their MIA_experiments.ipynb (`scrub`: gamma 1, alpha 0.5,
    # msteps 3, sgda_epochs 5, forget batch 16, retain batch 32).
    scenario_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "class": {},
        "sample": {
            "alpha": 0.5,
            "gamma": 1.0,
            "msteps": 3,
            "epochs": 5,
            "retain_batch_size": 32,
        },
    }
    # Forget batch sizes: 512 (class, large_scale_unlearning.ipynb), 16 (sample, MIA notebook).
    default_batch_size: ClassVar[dict[str, int]] = {"class": 512, "sample": 16}

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self.teacher: Classifier | None = None

    @property
    def settings(self) -> ScrubOptions:
        assert isinstance(self.options, ScrubOptions)
        return self.options

    def max_loss(self, student: Classifier, teacher: Classifier, images: Tensor) -> LossTerms:
        """The max-step objective on a forget batch ``(Bf, C_in, H, W)``: ``-KL_T``."""
        with torch.no_grad():
            teacher_logits = teacher(images)  # (Bf, C)
        divergence = distill_kl(student(images), teacher_logits, self.settings.temperature)
        return LossTerms(-divergence, {"forget_kl": divergence.detach()})

    def min_loss(
        self, student: Classifier, teacher: Classifier, images: Tensor, labels: Tensor
    ) -> LossTerms:
        """The min-step objective on a retain batch ``(Br, C_in, H, W)``, labels ``(Br,)``:
        ``gamma * CE + alpha * KL_T``."""
        with torch.no_grad():
            teacher_logits = teacher(images)  # (Br, C)
        logits = student(images)  # (Br, C)
        retain_ce = F.cross_entropy(logits, labels)
        divergence = distill_kl(logits, teacher_logits, self.settings.temperature)
        total = self.settings.gamma * retain_ce + self.settings.alpha * divergence
        return LossTerms(total, {"retain_ce": retain_ce.detach(), "retain_kl": divergence.detach()})

    def run(self, task: UnlearningTask) -> MethodOutcome:
        config, split, data = task.config, task.split, task.data
        settings = self.settings
        device = torch.device(config.device)
        student = task.model
        prepare_model(student, device, channels_last=config.channels_last)
        forget_batch_size = self.batch_size(config, split.scenario)
        stopping = config.stopping
        evaluation_sets: EvaluationSets = build_evaluation_sets(
            data, split, stopping, generator=task.generator
        )
        history: list[dict[str, float]] = []
        check_seconds = 0.0
        forget_batches = 0
        max_passes = 0

        def check(epoch: int) -> bool:
            nonlocal check_seconds
            started_check = time.perf_counter()
            result = check_rule(
                student,
                evaluation_sets,
                split,
                data.num_classes,
                batch_size=config.eval_batch_size,
                channels_last=config.channels_last,
                checks_forget=config.stopping.class_checks_forget,
            )
            check_seconds += time.perf_counter() - started_check
            history.append(
                {
                    "batch": forget_batches,
                    "pass": max_passes,
                    "epoch": epoch,
                    "forget_train_acc": result.forget_acc,
                    "held_out_acc": result.held_out_acc,
                }
            )
            return stopping.rule == "auto" and result.stop

        def load(index: Tensor) -> tuple[Tensor, Tensor]:
            index = shard(index)  # this process's share under torchrun (all of it alone)
            images = to_device(data.train.images[index], device, channels_last=config.channels_last)
            return images, data.train.labels[index].to(device)

        def step(terms: LossTerms, where: str) -> None:
            take_step(
                terms.total,
                optimizer,
                student,
                failure=f"{self.name}: {where} loss is {{loss}}; lower the learning rate",
            )

        started = time.perf_counter()
        # The teacher: a separate, frozen copy of the original (same device and memory format).
        teacher = copy.deepcopy(student)
        freeze(teacher)
        self.teacher = teacher
        optimizer = make_optimizer(student.parameters(), config.optimizer)
        stopped_by = "rule" if check(0) else ""
        epochs_run = 0
        progress = tqdm(
            total=settings.epochs, desc="unlearn (scrub)", unit="epoch", disable=task.quiet
        )
        for epoch in range(1, settings.epochs + 1):
            if stopped_by:
                break
            lr = scrub_learning_rate(
                epoch, config.optimizer.lr, settings.lr_decay_epochs, settings.lr_decay_rate
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Their train_distill: student in train mode (BatchNorm on batch statistics).
            student.train()
            if epoch <= settings.msteps:
                for index in epoch_batches(
                    split.forget, forget_batch_size, generator=task.generator
                ):
                    images, _ = load(index)
                    step(self.max_loss(student, teacher, images), f"max-step (epoch {epoch})")
                    forget_batches += 1
                max_passes += 1
            for index in epoch_batches(
                split.retain, settings.retain_batch_size, generator=task.generator
            ):
                images, labels = load(index)
                step(self.min_loss(student, teacher, images, labels), f"min-step (epoch {epoch})")
            epochs_run = epoch
            progress.update()
            if check(epoch):
                stopped_by = "rule"
        progress.close()
        seconds = time.perf_counter() - started
        student.eval()
        logger.info(
            "scrub: %d epochs (%d max-step passes, %d forget batches), %.2fs (checks %.2fs)",
            epochs_run,
            max_passes,
            forget_batches,
            seconds,
            check_seconds,
        )
        return MethodOutcome(
            model=student,
            seconds=seconds,
            forget_batches=forget_batches,
            passes=float(max_passes),
            history=history,
            extra={
                "check_seconds": check_seconds,
                "stopped_by": stopped_by or "epochs",
                "epochs": epochs_run,
            },
        )


def incompetent_teacher(task: UnlearningTask, device: torch.device) -> Classifier:
    """A randomly initialised network of the original's architecture, frozen, on ``device``.

    A registry model is rebuilt by its constructor (its own initialisation); a user's model is
    deep-copied and every layer with ``reset_parameters`` re-initialised (as ``retrain`` does).
    The initialisation draws from torch's global RNG, so it runs in a forked RNG seeded from
    ``task.generator``: the run stays reproducible and the global state untouched.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=task.generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task.train_config is not None and task.train_config.model in available_models():
            teacher = build_model(
                task.train_config.model,
                num_classes=task.data.num_classes,
                input_shape=task.data.input_shape,
            )
        else:
            teacher = copy.deepcopy(task.model)
            for module in teacher.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    prepare_model(teacher, device, channels_last=task.config.channels_last)
    freeze(teacher)
    return teacher


def bad_teacher_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Their ``UnlearnerLoss``: KL divergence from each sample's teacher to the student.

    Their code computes both teachers on the whole batch and mixes the two softmaxes with the
    forget flag ``l_i`` (``p_i = l_i softmax(u_i / T) + (1 - l_i) softmax(f_i / T)``); here the
    caller passes, per row, the logits of the teacher that row reads (the incompetent one's for
    a forget sample, the competent one's for a retain sample), which is the same ``p_i``.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, row ``i`` from sample ``i``'s teacher; a fixed target.
        temperature: T of every softmax.

    Returns:
        Scalar ``mean_{i, c} p_i,c (log p_i,c - log q_i,c)`` over all ``B * C`` entries, with
        ``q = softmax(student / T)`` and ``p = softmax(teacher / T)`` (``F.kl_div``'s default
        ``reduction="mean"``, as in their code).
    """
    target = F.softmax(teacher_logits.detach() / temperature, dim=1)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    # F.kl_div(..., reduction="mean") of their code, spelled out (sum over the B * C entries
    # divided by their number) because torch warns that "mean" will change meaning.
    return F.kl_div(log_student, target, reduction="sum") / target.numel()


class BadTeacherOptions(StrictModel):
    """Hyperparameters of bad teaching; defaults are Chundawat et al.'s."""

    temperature: float = Field(1.0, gt=0)
    """``KL_temperature`` of their ``blindspot_unlearner``."""
    retain_fraction: float = Field(0.3, gt=0, le=1)
    """Share of the retain set distilled per epoch (their ``retain_train_subset``: 30%)."""


@register_method("bad_teacher")
class BadTeacher(LoopMethod):
    """Distil the original on retain samples and a random network on forget samples.

    Their epoch is one pass, in batches of ``B`` (256), over the shuffled union of the forget set
    and a random 30% subset of the retain set. conun's engine runs it as a pass over the forget
    set (``pass_over = "forget"``) where each step pairs a forget batch of
    ``B_u = round(B * |D_u| / (|D_u| + |D_r'|))`` with a fresh random retain batch of
    ``B - B_u``, ``|D_r'| = round(retain_fraction * |D_r|)``: every batch has the composition of
    their mixed batches in expectation, an epoch takes the same number of steps, and it visits
    every forget sample once and about ``|D_r'|`` distinct retain samples.

    Departures from their code: the retain samples of one pass are a fresh random draw each pass
    (their subset is drawn once); the forget share of a batch is fixed rather than random; the
    incompetent teacher's initialisation comes from the run's seeded generator. Defaults
    (``configs/unlearn/bad_teacher-*.yaml``): Adam lr 1e-4, batch 256, one epoch
    (``stopping: {rule: none, max_passes: 1}``), T = 1, 30% of the retain set — their
    CIFAR-Super20 notebook.
    """

    Options: ClassVar[type[StrictModel]] = BadTeacherOptions
    pass_over: ClassVar[Literal["forget", "retain"]] = "forget"
    default_batch_size: ClassVar[dict[str, int]] = {"class": 256, "sample": 256}

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self.competent_teacher: Classifier | None = None
        self.incompetent_teacher: Classifier | None = None
        # (B_u, B - B_u), set by run() from the split's sizes.
        self._per_step: tuple[int, int] | None = None

    @property
    def settings(self) -> BadTeacherOptions:
        assert isinstance(self.options, BadTeacherOptions)
        return self.options

    def mixed_batch_split(self, mixed: int, num_forget: int, num_retain: int) -> tuple[int, int]:
        """``(B_u, B - B_u)``: forget and retain samples per step for a mixed batch of ``B``.

        ``B_u = round(B * |D_u| / (|D_u| + |D_r'|))`` with ``|D_r'| = round(retain_fraction *
        |D_r|)``, kept in ``[1, B - 1]`` so that both halves are present (for ``B >= 2``).
        """
        subset = max(1, round(self.settings.retain_fraction * num_retain))
        forget = round(mixed * num_forget / (num_forget + subset))
        forget = min(max(1, forget), max(1, mixed - 1))
        return forget, max(1, mixed - forget)

    def run(self, task: UnlearningTask) -> MethodOutcome:
        # The engine asks for the batch sizes before prepare(): fix them here from the split.
        mixed = super().batch_size(task.config, task.split.scenario)
        self._per_step = self.mixed_batch_split(
            mixed, task.split.forget.numel(), task.split.retain.numel()
        )
        return super().run(task)

    def batch_size(self, config: UnlearnConfig, scenario: Scenario) -> int:
        """Forget samples per step, ``B_u`` (the config's ``batch_size`` is the mixed ``B``)."""
        if self._per_step is None:
            return super().batch_size(config, scenario)
        return self._per_step[0]

    def retain_batch_size(self, forget_batch_size: int) -> int:
        """``B - B_u`` retain samples per step."""
        return self._per_step[1] if self._per_step is not None else forget_batch_size

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        device = next(model.parameters()).device
        competent = copy.deepcopy(model)
        freeze(competent)
        self.competent_teacher = competent
        self.incompetent_teacher = incompetent_teacher(task, device)

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.retain_images is not None
        assert self.competent_teacher is not None and self.incompetent_teacher is not None
        num_forget = batch.forget_images.shape[0]
        # One student pass over the mixed batch, as their loader yields it (BatchNorm in train
        # mode sees forget and retain samples together).
        student_logits = model(torch.cat([batch.forget_images, batch.retain_images]))  # (B, C)
        with torch.no_grad():
            # Each teacher only on the rows whose target it gives (eval mode: per-sample
            # outputs, so this equals their whole-batch pass followed by the mix).
            teacher_logits = torch.cat(
                [
                    self.incompetent_teacher(batch.forget_images),  # (B_u, C)
                    self.competent_teacher(batch.retain_images),  # (B - B_u, C)
                ]
            )
        total = bad_teacher_loss(student_logits, teacher_logits, self.settings.temperature)
        # Per-half parts for the log (same reduction, restricted to each half's rows).
        forget_kl = bad_teacher_loss(
            student_logits[:num_forget].detach(),
            teacher_logits[:num_forget],
            self.settings.temperature,
        )
        retain_kl = bad_teacher_loss(
            student_logits[num_forget:].detach(),
            teacher_logits[num_forget:],
            self.settings.temperature,
        )
        return LossTerms(total, {"forget_kl": forget_kl, "retain_kl": retain_kl})


__all__ = [
    "BadTeacher",
    "BadTeacherOptions",
    "Scrub",
    "ScrubOptions",
    "bad_teacher_loss",
    "distill_kl",
    "incompetent_teacher",
    "scrub_learning_rate",
]
