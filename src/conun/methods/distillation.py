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
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from conun.config import OptimizerConfig, StoppingConfig, StrictModel, UnlearnConfig
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model
from conun.distributed.group import context
from conun.engine.monitor import (
    BatchLoader,
    LoopResume,
    RunClock,
    StoppingMonitor,
    order_parts,
    split_order,
)
from conun.engine.training import make_optimizer, take_step
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    MethodOutcome,
    UnlearningBatch,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier
from conun.models.registry import build_model, is_model_name

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


@dataclass
class _ScrubPosition:
    """Where SCRUB's schedule is; all of it but ``order`` goes into a resumable state as JSON.

    Attributes:
        epoch: the current epoch (1-based).
        phase: ``"max"`` (the forget pass, in the first ``msteps`` epochs) or ``"min"``.
        position: the next batch of ``order``.
        steps: optimizer steps taken (the unit of ``resume.every``).
        forget_batches: max-steps taken.
        max_passes: max-step passes completed.
        order: the current phase's ``(B,)`` index batches (None: not drawn yet).
    """

    epoch: int = 1
    phase: Literal["max", "min"] = "max"
    position: int = 0
    steps: int = 0
    forget_batches: int = 0
    max_passes: int = 0
    order: list[Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "order"}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> _ScrubPosition:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name != "order"})


class ScrubOptions(StrictModel):
    """Hyperparameters of SCRUB; the field defaults are the authors' class-unlearning settings
    (Kurmanji et al., NeurIPS 2023, meghdadk/SCRUB ``large_scale_unlearning.ipynb``, CIFAR-10
    class forgetting: alpha 0.001, gamma 0.99, kd_T 4, msteps 2, sgda_epochs 3, retain batch
    256, lr decay x0.1 after epochs 3/5/9); the sample scenario departs from them
    (``Scrub.scenario_defaults``)."""

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
    first ``msteps`` epochs), and the learning rate follows a per-epoch step decay. It plugs into
    the engine's pieces (:mod:`conun.engine.monitor`: stopping checks and history, batch loading,
    timing, resumable states) and times itself like the engine: teacher copy and optimisation,
    checks included. With ``task.resume`` it saves a state every ``resume.every`` optimizer steps
    (max- and min-steps alike) and continues from one to the uninterrupted run's weights.

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
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        # Kurmanji et al. (NeurIPS 2023), meghdadk/SCRUB large_scale_unlearning.ipynb (CIFAR-10
        # class forgetting): SGD lr 5e-4, momentum 0.9, weight decay 5e-4; gamma 0.99, alpha
        # 0.001, kd_T 4, msteps 2, sgda_epochs 3, lr decay x0.1 after epochs 3/5/9; forget batch
        # 512, retain 256.
        "class": MethodDefaults(
            batch_size=512,
            optimizer=OptimizerConfig(name="sgd", lr=5e-4, momentum=0.9, weight_decay=5e-4),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=3),
        ),
        # meghdadk/SCRUB MIA_experiments.ipynb (`scrub`, selective forgetting of 100 CIFAR-10
        # samples): SGD lr 5e-4, momentum 0.9, weight decay 5e-4; gamma 1, alpha 0.5, kd_T 4,
        # msteps 3, sgda_epochs 5, lr decay x0.1 after epochs 3/5/9; forget batch 16, retain 32.
        "sample": MethodDefaults(
            batch_size=16,
            # The authors' selective-forgetting settings (above) where they differ from their
            # class-forgetting ones, the field defaults; kd_T 4 and the lr decay are the same.
            options=ScrubOptions(alpha=0.5, gamma=1.0, msteps=3, epochs=5, retain_batch_size=32),
            optimizer=OptimizerConfig(name="sgd", lr=5e-4, momentum=0.9, weight_decay=5e-4),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=5),
        ),
    }

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
        config, split = task.config, task.split
        settings = self.settings
        student = task.model
        prepare_model(student, torch.device(config.device), channels_last=config.channels_last)
        forget_batch_size = self.batch_size(config, split.scenario)
        monitor = StoppingMonitor.for_task(task, student)
        load = BatchLoader.training_set(task)
        clock = RunClock(task.resume)
        saves = LoopResume(task, monitor, clock)
        at = _ScrubPosition()

        def check(epoch: int) -> bool:
            position = {"batch": at.forget_batches, "pass": at.max_passes, "epoch": epoch}
            monitor.check(position, screen=epoch == 0)  # screened before the first step
            return monitor.holds

        def step(terms: LossTerms, where: str) -> None:
            take_step(
                terms.total,
                optimizer,
                student,
                failure=f"{self.name}: {where} loss is {{loss}} (step {at.steps + 1}); lower the "
                "learning rate",
            )
            at.steps += 1
            # Each batch is one step, so a state is saved exactly every `every` steps.
            if saves.due(at.steps - 1, at.steps):
                assert at.order is not None
                flat, sizes = order_parts(at.order)
                saves.save(
                    model=student,
                    optimizer=optimizer,
                    loop={**at.to_dict(), "sizes": sizes},
                    loop_tensors={"order": flat},
                )

        clock.start()
        # The teacher: a separate, frozen copy of the original (same device and memory format),
        # taken before a resumed run loads the saved weights.
        teacher = copy.deepcopy(student)
        freeze(teacher)
        self.teacher = teacher
        optimizer = make_optimizer(student.parameters(), config.optimizer)
        stopped_by = ""
        if saves.state is not None:
            state = saves.restore(model=student, optimizer=optimizer)
            at = _ScrubPosition.from_dict(state.loop)
            at.order = split_order(state.loop_tensor("order"), state.loop["sizes"])
            logger.info("scrub: resumed at step %d (epoch %d)", at.steps, at.epoch)
        elif check(0):
            stopped_by = "rule"
        epochs_run = at.epoch - 1
        progress = tqdm(
            total=settings.epochs,
            initial=epochs_run,
            desc="unlearn (scrub)",
            unit="epoch",
            disable=task.quiet,
        )
        for epoch in range(at.epoch, settings.epochs + 1):
            if stopped_by:
                break
            at.epoch = epoch
            lr = scrub_learning_rate(
                epoch, config.optimizer.lr, settings.lr_decay_epochs, settings.lr_decay_rate
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Their train_distill: student in train mode (BatchNorm on batch statistics).
            student.train()
            if at.phase == "max" and epoch <= settings.msteps:
                if at.order is None:
                    at.order = epoch_batches(
                        split.forget, forget_batch_size, generator=task.generator
                    )
                while at.position < len(at.order):
                    images, _ = load(at.order[at.position])
                    at.position += 1
                    at.forget_batches += 1
                    step(self.max_loss(student, teacher, images), f"max-step (epoch {epoch})")
                at.max_passes += 1
            if at.phase == "max":
                at.phase, at.order, at.position = "min", None, 0
            if at.order is None:
                at.order = epoch_batches(
                    split.retain, settings.retain_batch_size, generator=task.generator
                )
            while at.position < len(at.order):
                images, labels = load(at.order[at.position])
                at.position += 1
                step(self.min_loss(student, teacher, images, labels), f"min-step (epoch {epoch})")
            at.phase, at.order, at.position = "max", None, 0
            epochs_run = epoch
            progress.update()
            if check(epoch):
                stopped_by = "rule"
        progress.close()
        seconds = clock.seconds()
        student.eval()
        logger.info(
            "scrub: %d epochs (%d max-step passes, %d forget batches), %.2fs (checks %.2fs)",
            epochs_run,
            at.max_passes,
            at.forget_batches,
            seconds,
            monitor.check_seconds,
        )
        return MethodOutcome(
            model=student,
            seconds=seconds,
            forget_batches=at.forget_batches,
            passes=float(at.max_passes),
            history=monitor.history,
            extra={
                "check_seconds": monitor.check_seconds,
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
        if task.train_config is not None and is_model_name(task.train_config.model):
            teacher = build_model(
                task.train_config.model,
                num_classes=task.data.num_classes,
                input_shape=task.data.input_shape,
                model_args=task.train_config.model_args,
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
    """Hyperparameters of bad teaching; defaults are Chundawat et al.'s (AAAI 2023,
    vikram2000b/bad-teaching-unlearning ``unlearn.py`` ``blindspot_unlearner``, CIFARSuper20
    notebook), for both scenarios."""

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
    (``scenario_defaults``, ``BadTeacherOptions``): Adam lr 1e-4, batch 256, one epoch
    (``stopping: {rule: none, max_passes: 1}``), T = 1, 30% of the retain set — their
    CIFAR-Super20 notebook.
    """

    Options: ClassVar[type[StrictModel]] = BadTeacherOptions
    pass_over: ClassVar[Literal["forget", "retain"]] = "forget"
    # Both scenarios: Chundawat et al. (AAAI 2023), vikram2000b/bad-teaching-unlearning
    # (unlearn.py blindspot_unlearner; CIFARSuper20 notebook): Adam lr 1e-4 (no weight decay),
    # batch 256, 1 epoch over forget + a random 30% of the retain set, KL_temperature 1.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        scenario: MethodDefaults(
            batch_size=256,
            optimizer=OptimizerConfig(name="adam", lr=1e-4, momentum=0.0, weight_decay=0.0),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=1),
        )
        for scenario in ("class", "sample")
    }

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
