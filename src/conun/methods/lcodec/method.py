"""L-CODEC: conditionally independent, block-restricted Newton unlearning.

Mehta, Pal, Singh, Ravi, "Deep Unlearning via Randomized Conditionally Independent Hessians"
(CVPR 2022; official code vsingh-group/LCODEC-deep-unlearning, ``scrub/scrub_tools.py``
``inp_perturb``, ``NewtonScrubStep``, ``NoisyReturn``; ``codec/torch_codec.py``,
``codec/torch_foci.py``). A Newton (influence-function) removal step over *all* weights needs the
inverse of a ``d x d`` Hessian; L-CODEC makes it affordable by updating only the few output units
(rows of Linear weights, filters of Conv2d weights, with their biases) whose activations carry the
information about the loss of the samples being removed, a Markov blanket found with FOCI on the
conditional-dependence coefficient CODEC of Azadkia & Chatterjee (Annals of Statistics 2021).

The forget set is removed one *removal batch* at a time (``batch_size`` samples, the
``scrub_batch_size`` of their ``multi_scrub.py``), in a seeded random order. For each batch ``U``
of ``m`` samples, with the model in eval mode throughout (their ``ActivationsHook`` puts it in eval
mode; BatchNorm uses its running statistics, so each sample's loss is its own):

1. **Input perturbation.** ``perturbations`` noisy copies ``x + sigma * N(0, 1)`` of the batch
   (``sigma = perturbation_std``). For each copy: the mean over the batch (and over pixels, for a
   convolution) of every output unit of every Linear and Conv2d layer, in module order, gives one
   row of the feature matrix ``A`` ``(perturbations, units)``; the batch's mean cross-entropy is
   the response ``y`` ``(perturbations,)``.
2. **Selection (L-FOCI).** FOCI orders the units: first the one with the largest
   ``T_n(y, A_j)``, then repeatedly the one with the largest conditional coefficient
   ``T_n(y, A_j | A_selected)``, stopping as soon as that is ``<= 0`` (their ``foci`` with
   ``earlyStop``). The selected parameters are the weight rows (and bias entries) of the
   selected units: a vector ``theta`` of ``P`` entries.
3. **Newton removal step** (Sekhari et al., "Remember What You Want to Forget", NeurIPS 2021, as
   their ``NewtonScrubStep`` with ``HessType = Sekhari``), on ``theta`` only::

       theta <- theta + 1/(n - m) * (H + lambda I)^-1 * sum_{u in U} grad_theta loss_u

   ``n`` is the number of training samples the model still reflects (retain set plus the forget
   samples not removed yet), ``H`` the Hessian, with respect to ``theta``, of the mean
   cross-entropy over the ``n - m`` samples that remain after this removal, and ``lambda`` the
   damping ``l2_reg`` (their ``--l2_reg``, the weight decay the original was trained with).
4. **Noise** (their ``NoisyReturn``, Sekhari et al. Theorem 3): when ``noise`` is on (off by
   default, see the departures), Gaussian
   noise of standard deviation ``(gamma / epsilon) * sqrt(2 ln(1.25 / delta))``,
   ``gamma = 2 M L^2 m^2 / (lambda^3 n^2)``, is added to ``theta``.

Options and defaults: their ``cifar_scrub.sh`` (``n_perturbations 1000``, ``l2_reg 0.01``,
``epsilon 0.1``, ``delta 0.01``, ``selectionType FOCI``, ``FOCIType full``, ``HessType
Sekhari``), the perturbation scale 0.1 and the constants ``M = 0.25``, ``L = 1`` hard-coded in
``inp_perturb`` / ``NoisyReturn``.

Not a loop of optimizer steps, so :meth:`LCodec.run` implements the algorithm itself. It plugs
into the engine's batch loader, clock and resumable states (:mod:`conun.engine.monitor`) and
reports ``seconds`` as its wall-clock. With ``task.resume`` it saves a state after every removal
batch (a Newton step costs far more than a save; there are no optimizer steps to count) and
continues from one to the uninterrupted run's weights. It makes no stopping-rule checks: the
schedule is fixed (every forget sample is removed once).

Departures from the authors' code, and why:

- **Exact Hessian.** Their ``FD`` approximation needs the full-data gradients and weights saved at
  the last two training epochs, which a conun model does not carry (and its sample Hessian is
  built from the same gradient twice, a bug that makes it zero). conun uses the exact Hessian
  of the remaining data's mean loss on the selected parameters, through exact Hessian-vector
  products with ``torch.func`` (forward-over-reverse). By default (``solver: minres``) the
  Newton direction ``(H + lambda I)^-1 g`` is solved by MINRES on those products, without
  forming ``H``: ~20-60 products instead of the ``P`` (hundreds to thousands) that forming it
  takes, the same step to the solver's tolerance (tested against the formed matrix), and no
  limit on ``P``. ``solver: matrix`` forms the ``P x P`` Hessian and solves it in float64, as
  their code inverts theirs; a selection above ``max_selected_params`` then raises
  :class:`SelectionTooLargeError` instead of degrading.
- **Sekhari's step for a batch.** Their code steps by ``1/(n-1)`` times the batch's *mean*
  gradient with ``n`` fixed at the original training-set size; conun uses Sekhari's formula,
  ``1/(n-m)`` times the *sum* of the ``m`` gradients with ``n`` the current size, which is what
  makes the step exact for a quadratic loss (tested), and ``m``, ``n`` in the noise likewise
  (their calls pass ``m = 1``, exact for their default one-sample removals).
- **Noise off by default.** Its scale grows as ``m^2 / n^2``: with their constants it is
  ``sigma ~ 6e-3`` for one sample out of CIFAR-10's 50,000 (their setting) but ``~10`` for one
  sample and ``~4e4`` for a 64-sample batch out of digits' ~1,200 (measured: test accuracy 0.98 ->
  0.11). ``noise: true`` restores it.
- **Hessian samples.** ``hessian_samples`` (default: 256) averages the exact Hessian over a seeded
  random subset of the remaining samples, an unbiased estimate; ``null`` uses all of them (on
  digits a ~3,000-parameter selection then costs ~2 minutes per removal batch on 2 CPU cores).
- **No skipping.** Their ``multi_scrub.py`` reverts a removal that drops validation accuracy by
  more than 5 points and moves on to another random sample; a conun forget request names its
  samples, so every batch is removed.
- CODEC's ranks follow Azadkia & Chatterjee's definition with ties (``R_i = #{j: y_j <= y_i}``);
  their code breaks ties by sort order. The two agree for continuous responses (the loss).
- Noise for the perturbations and the Gaussian mechanism comes from the run's seeded generator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from conun.config import StrictModel
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model
from conun.engine.monitor import (
    BatchLoader,
    LoopResume,
    RunClock,
    order_parts,
    split_order,
)
from conun.methods.base import (
    MethodDefaults,
    MethodOutcome,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)
from conun.methods.lcodec.newton import (
    ParameterBlock,
    gather_selected,
    gaussian_mechanism_std,
    hessian_vector_product,
    newton_removal_step,
    removed_gradient_sum,
    selected_blocks,
    selected_hessian,
    solve_damped_minres,
    write_selected_,
)
from conun.methods.lcodec.selection import (
    UnitLayer,
    foci,
    perturbation_features,
    unit_layers,
)

logger = logging.getLogger(__name__)


class SelectionTooLargeError(RuntimeError):
    """The selected parameters are too many for an exact Hessian under the configured budget."""


class LCodecOptions(StrictModel):
    """Hyperparameters of L-CODEC; defaults are the authors' (Mehta et al., CVPR 2022,
    vsingh-group/LCODEC-deep-unlearning ``scrub/scrub_scripts/cifar_scrub.sh``,
    ``scrub_tools.py``) except ``noise`` (off) and the Hessian (exact, on ``hessian_samples``
    samples, solved by ``minres``), conun's departures (see the module docstring)."""

    perturbations: int = Field(1000, ge=2)
    """Noisy copies of a removal batch that FOCI learns from (their ``n_perturbations``)."""
    perturbation_std: float = Field(0.1, gt=0)
    """Standard deviation of the input noise (hard-coded 0.1 in their ``inp_perturb``)."""
    l2_reg: float = Field(0.01, ge=0)
    """lambda: damping added to the Hessian, and the strong convexity in the noise (their
    ``--l2_reg``)."""
    noise: bool = False
    """Add the Gaussian mechanism's noise to the updated parameters (their ``NoisyReturn``; off
    by default, see the module docstring)."""
    epsilon: float = Field(0.1, gt=0)
    """Privacy parameter of the noise (their ``--epsilon``)."""
    delta: float = Field(0.01, gt=0, lt=1)
    """Privacy parameter of the noise (their ``--delta``)."""
    hessian_lipschitz: float = Field(0.25, gt=0)
    """M in the noise's scale (their ``NoisyReturn`` default, "for cross entropy")."""
    gradient_lipschitz: float = Field(1.0, gt=0)
    """L in the noise's scale (their ``NoisyReturn`` default)."""
    solver: Literal["minres", "matrix"] = "minres"
    """How the Newton direction ``(H + lambda I)^-1 g`` is computed: ``minres`` iterates on
    Hessian-vector products without forming ``H`` (memory ``O(P)``, tens of products);
    ``matrix`` forms the ``P x P`` Hessian (``P`` products) and solves it in float64."""
    solver_rtol: float = Field(1e-6, gt=0, lt=1)
    """``minres``: relative residual at which it stops (float32 products limit it to ~1e-7)."""
    solver_max_iterations: int = Field(1000, ge=1)
    """``minres``: most Hessian-vector products per removal batch (not converging within them
    is logged and recorded in the run's ``removals``)."""
    max_selected_params: int = Field(8192, ge=1)
    """``matrix``: largest selection whose ``P x P`` Hessian is formed; a larger one is an
    error."""
    hessian_samples: int | None = Field(256, ge=1)
    """Remaining samples the Hessian is averaged over (a random subset, an unbiased estimate of
    the exact Hessian); None: all of them, the exact Hessian. Their finite-difference Hessian
    needs training-time gradients conun does not keep; 256 keeps the exact one affordable
    (all of them: ~2 minutes per removal batch on digits, see the module docstring)."""
    hessian_batch_size: int = Field(256, ge=1)
    """Samples per Hessian chunk (memory grows with it times ``tangent_chunk``)."""
    tangent_chunk: int = Field(64, ge=1)
    """``matrix``: Hessian columns computed per vectorised pass."""

    @model_validator(mode="after")
    def _noise_needs_regularisation(self) -> LCodecOptions:
        if self.noise and self.l2_reg == 0:
            raise ValueError("noise needs l2_reg > 0 (its scale divides by l2_reg^3)")
        return self


@register_method("lcodec")
class LCodec(UnlearningMethod):
    """Remove each removal batch with a Newton step on the units FOCI selects (see the module
    docstring). ``batch_size`` is the number of samples removed per step."""

    Options: ClassVar[type[StrictModel]] = LCodecOptions
    # Sample unlearning only: the paper's (and the contrastive paper's) use. On a whole class the
    # removed samples are fit so well that their summed gradient, and so the Newton step, is
    # negligible (measured on digits class 5: step norms ~0.05, class accuracy stays 100%).
    scenarios: ClassVar[tuple[Scenario, ...]] = ("sample",)
    # Mehta et al. (CVPR 2022), vsingh-group/LCODEC-deep-unlearning
    # scrub/scrub_scripts/cifar_scrub.sh (n_perturbations 1000, l2_reg 0.01, epsilon 0.1, delta
    # 0.01, FOCI full, HessType Sekhari) and scrub_tools.py (input noise 0.1, M = 0.25, L = 1).
    # One shot per removal batch: no optimizer steps (optimizer and stopping unused); batch_size
    # is the number of samples removed per Newton step. Departures (module docstring): noise off
    # (its scale, 2ML^2m^2/(lambda^3 n^2 epsilon)..., is ~1e4 for a 64-sample removal from ~1200
    # digits samples and destroys the network); their finite-difference Hessian needs
    # training-time gradients conun does not keep, so the Hessian is the exact one on a random
    # subset of 256 remaining samples (None: all of them), and the Newton direction is solved by
    # MINRES on exact Hessian-vector products instead of forming and inverting the P x P matrix
    # (solver: matrix does that; same step to rtol 1e-6, ~15x slower on Fashion-MNIST small_cnn).
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "sample": MethodDefaults(batch_size=64)
    }

    def run(self, task: UnlearningTask) -> MethodOutcome:
        config, split = task.config, task.split
        model = task.model
        batch_size = self.batch_size(config, split.scenario)
        load = BatchLoader.training_set(task)
        clock = RunClock(task.resume)
        # No stopping monitor: the schedule is fixed, and drawing its evaluation subsets would
        # shift every later random draw of the run.
        saves = LoopResume(task, None, clock)
        clock.start()
        prepare_model(model, load.device, channels_last=config.channels_last)
        model.eval()  # their ActivationsHook / DisableBatchNorm: running statistics throughout
        layers = unit_layers(model)
        removals: list[dict[str, float]] = []
        position = 0  # the next batch of `order`
        if saves.state is not None:
            state = saves.restore(model=model, optimizer=None)
            order = split_order(state.loop_tensor("order"), state.loop["sizes"])
            position, removals = state.loop["position"], state.loop["removals"]
            logger.info("lcodec: resumed at removal batch %d of %d", position + 1, len(order))
        else:
            order = list(shuffled_batches(split.forget, batch_size, generator=task.generator))
        # Forget samples not removed yet: all but those of the batches before `position`.
        pending = torch.ones(split.forget.numel(), dtype=torch.bool)
        slot = {int(sample): i for i, sample in enumerate(split.forget.tolist())}
        for done in order[:position]:
            for sample in done.tolist():
                pending[slot[sample]] = False
        while position < len(order):
            removal = order[position]
            position += 1
            for sample in removal.tolist():
                pending[slot[sample]] = False
            remaining = torch.cat([split.retain, split.forget[pending]])
            removals.append(
                self.remove_batch(
                    model,
                    layers,
                    removal,
                    remaining,
                    load=load,
                    generator=task.generator,
                    chunk_size=config.eval_batch_size,
                )
            )
            logger.debug("lcodec: %s", removals[-1])
            if saves.saving:
                # After every removal batch: one Newton step costs far more than a save.
                flat, sizes = order_parts(order)
                saves.save(
                    model=model,
                    optimizer=None,
                    loop={"position": position, "sizes": sizes, "removals": removals},
                    loop_tensors={"order": flat},
                )
        seconds = clock.seconds()
        logger.info(
            "lcodec: %d removal batches, %.1f selected parameters on average, %.2fs",
            len(removals),
            sum(r["selected_params"] for r in removals) / max(1, len(removals)),
            seconds,
        )
        return MethodOutcome(model=model, seconds=seconds, extra={"removals": removals})

    def remove_batch(
        self,
        model: nn.Module,
        layers: list[UnitLayer],
        removal: Tensor,
        remaining: Tensor,
        *,
        load: BatchLoader,
        generator: torch.Generator,
        chunk_size: int,
    ) -> dict[str, float]:
        """Remove one batch: select units with FOCI, take the Newton step on them (in place).

        Args:
            model: the classifier, in eval mode.
            layers: :func:`unit_layers` of ``model``.
            removal: ``(m,)`` training indices of the batch removed now.
            remaining: ``(n - m,)`` training indices the model still reflects after it.
            load: the training set's batches (whole on every rank).
            generator: source of the perturbations, the Hessian subset and the noise.
            chunk_size: images per forward pass of the perturbations.

        Returns:
            The batch's record in the run's ``removals``.

        Raises:
            SelectionTooLargeError: ``solver: matrix`` and a selection above
                ``max_selected_params``.
        """
        options = self.options
        assert isinstance(options, LCodecOptions)
        images, labels = load.whole(removal)
        features, losses = perturbation_features(
            model,
            layers,
            images,
            labels,
            perturbations=options.perturbations,
            std=options.perturbation_std,
            generator=generator,
            chunk_size=chunk_size,
        )
        selection = foci(features, losses)
        blocks = selected_blocks(model, layers, selection.ordering)
        selected = blocks[-1].stop
        if options.solver == "matrix" and selected > options.max_selected_params:
            raise SelectionTooLargeError(
                f"lcodec: FOCI selected {len(selection.ordering)} units with {selected} "
                f"parameters, above max_selected_params = {options.max_selected_params} "
                f"(the exact Hessian would be {selected} x {selected}); raise the option "
                "max_selected_params if memory and time allow"
            )
        removed, before = removal.numel(), remaining.numel() + removal.numel()
        curvature = remaining
        if options.hessian_samples is not None and options.hessian_samples < remaining.numel():
            chosen = torch.randperm(remaining.numel(), generator=generator)
            curvature = remaining[chosen[: options.hessian_samples]]

        parameters = {name: p.detach() for name, p in model.named_parameters()}
        theta = gather_selected(parameters, blocks)

        gradient_sum = removed_gradient_sum(model, blocks, images, labels)
        batches = [load.whole(chunk) for chunk in curvature.split(options.hessian_batch_size)]
        updated, solver = newton_update(
            model,
            blocks,
            theta,
            gradient_sum,
            batches,
            remaining=remaining.numel(),
            options=options,
        )
        std = 0.0
        if options.noise:
            std = gaussian_mechanism_std(
                removed=removed,
                samples=before,
                l2_reg=options.l2_reg,
                epsilon=options.epsilon,
                delta=options.delta,
                hessian_lipschitz=options.hessian_lipschitz,
                gradient_lipschitz=options.gradient_lipschitz,
            )
            noise = torch.randn(updated.shape, generator=generator)
            updated = updated + std * noise.to(updated.device)
        write_selected_(model, blocks, updated)
        return {
            "removed": float(removed),
            "units": float(len(selection.ordering)),
            "selected_params": float(selected),
            "step_norm": float((updated - theta).norm()),
            "noise_std": std,
            **solver,
        }


def newton_update(
    model: nn.Module,
    blocks: list[ParameterBlock],
    theta: Tensor,
    gradient_sum: Tensor,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    remaining: int,
    options: LCodecOptions,
) -> tuple[Tensor, dict[str, float]]:
    """Sekhari's removal step on the selected parameters, with the Hessian of the mean loss over
    ``batches`` (the curvature samples) and the solver ``options.solver`` names.

    Args:
        model: the classifier, in eval mode.
        blocks: the selected parameter slices; ``theta`` ``(P,)`` their current values.
        gradient_sum: ``(P,)`` the removed samples' summed loss gradient.
        batches: ``(images, labels)`` of the curvature samples, on the model's device.
        remaining: ``n - m``, the samples that remain after this removal.
        options: the method's options (solver, damping ``l2_reg``, tolerances).

    Returns:
        The updated ``theta`` ``(P,)`` and, for ``minres``, its iterations and convergence.
    """
    count = sum(int(labels.numel()) for _, labels in batches)
    if options.solver == "matrix":
        hessian = (
            selected_hessian(model, blocks, iter(batches), tangent_chunk=options.tangent_chunk)
            / count
        )
        step = newton_removal_step(
            theta, gradient_sum, hessian, remaining=remaining, damping=options.l2_reg
        )
        return step, {}
    summed = hessian_vector_product(model, blocks, batches)
    solved = solve_damped_minres(
        lambda vector: summed(vector) / count,
        gradient_sum,
        damping=options.l2_reg,
        rtol=options.solver_rtol,
        max_iterations=options.solver_max_iterations,
    )
    if not solved.converged:
        logger.warning(
            "lcodec: MINRES did not reach rtol %g in %d Hessian-vector products; the step uses "
            "its last iterate (raise solver_max_iterations, or use solver: matrix)",
            options.solver_rtol,
            solved.iterations,
        )
    direction = solved.solution.to(theta.device) / remaining
    return theta + direction.to(theta.dtype), {
        "solver_iterations": float(solved.iterations),
        "solver_converged": float(solved.converged),
    }


__all__ = [
    "LCodec",
    "LCodecOptions",
    "SelectionTooLargeError",
    "newton_update",
]
