"""The contrastive unlearning loss (Lee et al. 2025, Eq. 5-6): SupCon with the roles reversed.

Every forget sample is an anchor. Retain samples of the anchor's own class (``P(i)``) are pushed
away, retain samples of the other classes (``N(i)``) are pulled toward it:

    l_i = - mean_{a in N(i)} (z_i . z_a / tau)  +  log sum_{p in P(i)} exp(z_i . z_p / tau)

An anchor with no same-class retain sample (always so in class unlearning, Eq. 6) gets only the
pull term: Eq. 6's denominator is the constant ``|N(i)|``, whose log carries no gradient and is
left out. The loss is the mean of ``l_i`` over anchors (the paper's sum; the scale goes into
``lambda_UL``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_unlearning_loss(
    forget_z: Tensor,
    forget_y: Tensor,
    retain_z: Tensor,
    retain_y: Tensor,
    *,
    temperature: float = 0.7,
    anchor_weights: Tensor | None = None,
) -> Tensor:
    """Contrastive unlearning loss of forget anchors against a retain batch.

    Args:
        forget_z: ``(Nf, D)`` L2-normalised embeddings of the forget samples (the anchors).
        forget_y: ``(Nf,)`` labels of the forget samples.
        retain_z: ``(Nr, D)`` L2-normalised embeddings of the retain samples (the references).
        retain_y: ``(Nr,)`` labels of the retain samples.
        temperature: ``tau > 0``.
        anchor_weights: optional ``(Nf,)`` non-negative weights ``w_i`` (no gradient flows into
            them); the loss is then ``sum_i w_i l_i / Nf``. None: every weight is 1.

    Returns:
        Scalar tensor: the mean over anchors of ``l_i`` (weighted by ``anchor_weights``).
        Finite and differentiable for every input: an anchor with no different-class reference
        has no pull term, an anchor with no same-class reference no push term, and empty inputs
        give a zero that keeps the graph.

    Raises:
        ValueError: shapes that do not match, or ``temperature <= 0``.
    """
    _check_inputs(forget_z, forget_y, retain_z, retain_y, temperature)
    if anchor_weights is not None and anchor_weights.shape != forget_y.shape:
        raise ValueError(
            f"anchor_weights must be (Nf,) = {tuple(forget_y.shape)}, got "
            f"{tuple(anchor_weights.shape)}"
        )
    if forget_z.shape[0] == 0 or retain_z.shape[0] == 0:
        # Nothing to contrast; a zero connected to both inputs keeps backward() valid.
        return forget_z.sum() * 0.0 + retain_z.sum() * 0.0

    same_class = forget_y[:, None] == retain_y[None, :]  # (Nf, Nr): P(i) per row; N(i) the rest
    weights = None if anchor_weights is None else anchor_weights.detach()
    # Class unlearning never has a same-class reference (Eq. 6): every anchor's N(i) is the
    # whole retain batch, and the loss needs its mean only, not the (Nf, Nr) similarities. On a
    # CPU, where a step's small operations cost as much as its matrix products (issue #14),
    # that case is decided from the labels (one host sync, free there); an accelerator keeps
    # the general form, which is the same value without a sync per step.
    if forget_z.device.type == "cpu" and not bool(same_class.any()):
        pulled: Tensor = _PullOnlyLoss.apply(forget_z, retain_z, weights, temperature)
        return pulled
    loss: Tensor = _ContrastiveUnlearningLoss.apply(
        forget_z, retain_z, same_class, weights, temperature
    )
    return loss


def _anchor_scale(weights: Tensor | None, count: int, like: Tensor) -> Tensor:
    """``(Nf, 1)``: each anchor's factor ``w_i / Nf`` in the loss (``1 / Nf`` without weights)."""
    if weights is None:
        return torch.full((count, 1), 1.0 / count, dtype=like.dtype, device=like.device)
    return weights.to(like.dtype)[:, None] / count


class _PullOnlyLoss(torch.autograd.Function):
    """Eq. 6, where no anchor has a same-class reference: ``l_i = - z_i . r_mean / tau`` with
    ``r_mean`` the retain batch's mean embedding, so that

        dL/dz_i = - (w_i / Nf) r_mean / tau,    dL/dr_j = - sum_i (w_i / Nf) z_i / (Nr tau)

    (the same for every ``j``): a matrix-vector product instead of the ``(Nf, Nr)`` matrix of
    :class:`_ContrastiveUnlearningLoss`. Checked against the general form and autograd
    (tests/losses/test_contrastive_loss.py)."""

    @staticmethod
    def forward(
        ctx: Any,
        forget_z: Tensor,
        retain_z: Tensor,
        weights: Tensor | None,
        temperature: float,
    ) -> Tensor:
        retain_mean = retain_z.mean(dim=0)  # (D,)
        scale = _anchor_scale(weights, forget_z.shape[0], forget_z)  # (Nf, 1)
        ctx.save_for_backward(forget_z, retain_mean, scale)
        ctx.temperature, ctx.retain_count = temperature, retain_z.shape[0]
        return -(forget_z @ retain_mean).mul(scale[:, 0]).sum() / temperature

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        forget_z, retain_mean, scale = ctx.saved_tensors
        factor = -grad / ctx.temperature
        grad_forget = scale * (factor * retain_mean) if ctx.needs_input_grad[0] else None
        grad_retain = None
        if ctx.needs_input_grad[1]:
            row = (scale * forget_z).sum(dim=0) * (factor / ctx.retain_count)  # (D,)
            grad_retain = row.expand(ctx.retain_count, -1)
        return grad_forget, grad_retain, None, None


class _ContrastiveUnlearningLoss(torch.autograd.Function):
    """Eq. 5-6 with its gradient written out.

    With ``s_ij = z_i . r_j / tau`` and ``L = sum_i w_i l_i / Nf``, the gradient with respect to
    the similarities is one matrix,

        dL/ds_ij = (w_i / Nf) (softmax_{P(i)}(s_i)_j [j in P(i)] - [j in N(i)] / |N(i)|),

    so ``dL/dz = G R / tau`` and ``dL/dr = G^T Z / tau``: two matrix products. Autograd through
    the masked log-sum-exp took a dozen small kernels per step, which on a CPU cost as much
    as the products themselves (issue #14: the step's throughput). The value and gradient are
    checked against autograd on the plain formula (tests/losses/test_contrastive_loss.py).
    """

    @staticmethod
    def forward(
        ctx: Any,
        forget_z: Tensor,
        retain_z: Tensor,
        same_class: Tensor,
        weights: Tensor | None,
        temperature: float,
    ) -> Tensor:
        similarity = forget_z @ retain_z.T / temperature  # (Nf, Nr)
        other_class = ~same_class
        other_count = other_class.sum(dim=1, keepdim=True).clamp(min=1)
        # Pull: minus the mean similarity to the other classes' retain samples (0 without any).
        pull = -(torch.where(same_class, 0.0, similarity).sum(dim=1, keepdim=True) / other_count)
        # Push: log-sum-exp over the same class's retain samples; 0 for an anchor without any
        # (its row of -inf has log-sum-exp -inf, replaced before it meets anything else).
        same_logits = similarity.masked_fill(other_class, float("-inf"))
        has_same = same_class.any(dim=1, keepdim=True)
        push = torch.where(has_same, torch.logsumexp(same_logits, dim=1, keepdim=True), 0.0)
        # dl_i / ds_ij: softmax over P(i) (exp(-inf - 0) = 0 for a row without P(i)) minus the
        # uniform weights over N(i).
        coefficient = torch.exp(same_logits - push) - other_class / other_count
        scale = _anchor_scale(weights, forget_z.shape[0], similarity)
        ctx.save_for_backward(forget_z, retain_z, coefficient * scale)
        ctx.temperature = temperature
        return ((pull + push) * scale).sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        forget_z, retain_z, coefficient = ctx.saved_tensors
        g = coefficient * (grad / ctx.temperature)
        grad_forget = g @ retain_z if ctx.needs_input_grad[0] else None
        grad_retain = g.T @ forget_z if ctx.needs_input_grad[1] else None
        return grad_forget, grad_retain, None, None, None


def class_unlearning_objective(
    features: Tensor,
    logits: Tensor,
    retain_labels: Tensor,
    num_forget: int,
    *,
    temperature: float,
    lambda_ul: float,
    lambda_ce: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Class unlearning's whole objective, ``lambda_ul L_UL + lambda_ce CE(retain)``, as one
    autograd node, for batches where no anchor has a same-class reference (class unlearning,
    Eq. 6) and the retain embeddings are fixed references (``detach_retain``).

    The same value and gradients as normalising the features, slicing them and the logits into
    the forget and retain rows, :func:`contrastive_unlearning_loss` (its pull-only form) and
    ``F.cross_entropy`` on the retain rows; on a CPU each of those small kernels and autograd
    nodes costs a few tens of microseconds after the network's large ones (issue #14: the
    step's throughput against a cross-entropy step), and this is one node. Checked against
    that composition and by finite differences (tests/losses/test_contrastive_loss.py).

    Args:
        features: ``(N, D)`` the representation of the batch ``[X_u; X_r]`` (before the L2
            normalisation), forget rows first.
        logits: ``(N, C)`` the classifier's logits of the same rows.
        retain_labels: ``(N - num_forget,)`` labels of the retain rows.
        num_forget: ``Nf``, how many of the first rows are forget samples; ``0 < Nf < N``.
        temperature: ``tau > 0``.
        lambda_ul: the weight of ``L_UL``.
        lambda_ce: the weight of the retain cross-entropy.

    Returns:
        ``(total, unlearning, retain_ce)``: the scalar objective (differentiable with respect
        to ``features`` and ``logits``), and its two terms, without gradient, for the log.

    Raises:
        ValueError: shapes that do not match, ``num_forget`` outside ``(0, N)`` or
            ``temperature <= 0``.
    """
    rows = features.shape[0]
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if features.ndim != 2 or logits.ndim != 2 or logits.shape[0] != rows:
        raise ValueError(
            "features and logits must be (N, D) and (N, C) with the same N; got "
            f"{tuple(features.shape)} and {tuple(logits.shape)}"
        )
    if not 0 < num_forget < rows or retain_labels.shape != (rows - num_forget,):
        raise ValueError(
            f"num_forget must be in (0, {rows}) and retain_labels ({rows} - num_forget,); got "
            f"num_forget {num_forget} and retain_labels {tuple(retain_labels.shape)}"
        )
    total, unlearning, retain_ce = _ClassUnlearningObjective.apply(
        features, logits, retain_labels, num_forget, temperature, lambda_ul, lambda_ce
    )
    return total, unlearning, retain_ce


class _ClassUnlearningObjective(torch.autograd.Function):
    """``lambda_ul L_UL + lambda_ce CE`` of :func:`class_unlearning_objective`. With
    ``m_i = max(|f_i|, eps)`` (``F.normalize``), ``z_i = f_i / m_i``, ``r`` the mean of the
    retain rows' ``z`` (a constant: detached) and ``p`` the softmax of the retain logits:

        L_UL = - sum_{i < Nf} z_i . r / (Nf tau)
        dL/df_i = - lambda_ul (r - [|f_i| > eps] (z_i . r) z_i) / (m_i Nf tau)   (forget rows)
        dL/dlogits_j = lambda_ce (p_j - onehot(y_j)) / Nr                         (retain rows)

    and zero for the other rows. Under CUDA autocast the inputs are cast to float32 and the
    node computes in float32 (``custom_fwd``), so that its hand-written backward sees one dtype."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # type: ignore[untyped-decorator]
    def forward(
        ctx: Any,
        features: Tensor,
        logits: Tensor,
        retain_labels: Tensor,
        num_forget: int,
        temperature: float,
        lambda_ul: float,
        lambda_ce: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        lengths = torch.linalg.vector_norm(features, dim=1, keepdim=True)  # (N, 1)
        norms = lengths.clamp_min(1e-12)  # F.normalize's eps
        z = features / norms
        forget_z = z[:num_forget]
        retain_mean = z[num_forget:].mean(dim=0)  # (D,)
        pulls = forget_z @ retain_mean  # (Nf,)
        unlearning = pulls.sum() * (-1.0 / (num_forget * temperature))
        log_p = torch.log_softmax(logits[num_forget:], dim=1)  # (Nr, C)
        retain_ce = F.nll_loss(log_p, retain_labels)
        total = lambda_ul * unlearning + lambda_ce * retain_ce
        ctx.save_for_backward(
            forget_z, norms[:num_forget], lengths[:num_forget], retain_mean, pulls, log_p,
            retain_labels,
        )  # fmt: skip
        ctx.num_forget, ctx.temperature = num_forget, temperature
        ctx.lambdas = (lambda_ul, lambda_ce)
        ctx.mark_non_differentiable(unlearning, retain_ce)
        return total, unlearning, retain_ce

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")  # type: ignore[untyped-decorator]
    def backward(ctx: Any, grad: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        forget_z, norms, lengths, retain_mean, pulls, log_p, labels = ctx.saved_tensors
        num_forget, (lambda_ul, lambda_ce) = ctx.num_forget, ctx.lambdas
        rows = num_forget + log_p.shape[0]
        grad_features = grad_logits = None
        if ctx.needs_input_grad[0]:
            grad_features = forget_z.new_zeros((rows, forget_z.shape[1]))
            projection = torch.where(lengths > 1e-12, pulls[:, None], 0.0)  # (Nf, 1)
            pull = torch.addcmul(retain_mean, projection, forget_z, value=-1) / norms
            scale = grad * (-lambda_ul / (num_forget * ctx.temperature))
            grad_features[:num_forget] = pull * scale
        if ctx.needs_input_grad[1]:
            grad_logits = log_p.new_zeros((rows, log_p.shape[1]))
            retain = grad_logits[num_forget:]
            torch.exp(log_p, out=retain)
            retain[torch.arange(retain.shape[0], device=retain.device), labels] -= 1
            retain.mul_(grad * (lambda_ce / retain.shape[0]))
        return grad_features, grad_logits, None, None, None, None, None


def release_contrastive_unlearning_loss(
    forget_z: Tensor,
    forget_y: Tensor,
    retain_z: Tensor,
    retain_y: Tensor,
    *,
    temperature: float = 0.7,
    class_scenario: bool = False,
) -> Tensor:
    """``L_UL`` as the authors' released code computes it (``Loss_v1`` of
    core/trainer/unlearn/unlearn.py in github.com/Hongkyu-Lee/Contrastive-Unlearning).

    The release subtracts each row's detached maximum ``m_i`` of ``s = z_i . z_r / tau``, adds
    ``eps = 1e-20`` to every ``exp``, and broadcasts the log of the same-class sum over *every*
    retain column before averaging over the other-class columns, so that per anchor

        l_i = - mean_{a in N(i)} s_ia + (Nr / |N(i)|) log sum_{p in P(i)} (exp(s_ip - m_i) + eps)
              + m_i

    which, up to ``eps``, is ``-mean_N s + (Nr/|N(i)|) logsumexp_P s + m_i (1 - Nr/|N(i)|)``:
    the push term weighs ``Nr/|N(i)|`` instead of 1 (about +11% at batch 128 with 10 classes)
    and ``m_i`` carries no gradient. With ``class_scenario`` (the release's ``single_class``
    branch) an anchor with no same-class retain sample gets 1 inside the log, so no push term:
    ``l_i = -mean_N s + m_i``, whose gradient is the paper's (:func:`contrastive_unlearning_loss`)
    and whose value is the paper's plus the constant ``m_i``.

    Args:
        forget_z: ``(Nf, D)`` embeddings of the forget samples (the anchors).
        forget_y: ``(Nf,)`` labels of the forget samples.
        retain_z: ``(Nr, D)`` embeddings of the retain samples.
        retain_y: ``(Nr,)`` labels of the retain samples.
        temperature: ``tau > 0``.
        class_scenario: the release's ``single_class`` branch (see above).

    Returns:
        Scalar tensor: the mean over anchors of ``l_i``.

    Raises:
        ValueError: shapes that do not match, ``temperature <= 0``, or an input on which the
            release returns -inf/NaN: an anchor with no other-class retain sample (0/0), or,
            outside ``class_scenario``, an anchor with no same-class retain sample (log 0).
            Reproduced as an error, never silently.
    """
    _check_inputs(forget_z, forget_y, retain_z, retain_y, temperature)
    if forget_z.shape[0] == 0 or retain_z.shape[0] == 0:
        raise ValueError(
            "release loss: empty forget or retain batch (the release divides by zero there)"
        )
    same_class = forget_y[:, None] == retain_y[None, :]  # (Nf, Nr): P(i) per row
    other_class = ~same_class
    other_count = other_class.sum(dim=1)
    has_same = same_class.any(dim=1)
    if not bool((other_count > 0).all()):
        raise ValueError(
            "release loss: a forget anchor has no retain sample of another class; the "
            "release's loss is NaN there (0/0); use a larger or more varied retain batch"
        )
    if not class_scenario and not bool(has_same.all()):
        raise ValueError(
            "release loss (sample scenario): a forget anchor has no retain sample of its own "
            "class; the release's loss is -inf/NaN there (log 0); use a larger retain batch or "
            "push_weighting=paper"
        )
    similarity = forget_z @ retain_z.T / temperature  # (Nf, Nr)
    row_max = similarity.max(dim=1, keepdim=True).values.detach()  # (Nf, 1): m_i
    shifted = similarity - row_max
    same = same_class.to(shifted.dtype)
    other = other_class.to(shifted.dtype)
    same_sum = ((torch.exp(shifted) + 1e-20) * same).sum(dim=1, keepdim=True)  # (Nf, 1)
    if class_scenario:
        # The release's neg_add_mask: 1 inside the log for an anchor with no positive.
        same_sum = same_sum + (~has_same).to(same_sum.dtype)[:, None]
    # The release's slip, kept: the (Nf, 1) log is broadcast over all Nr columns (not only
    # N(i)) and the row is then divided by |N(i)|.
    log_prob = shifted * other - torch.log(same_sum)  # (Nf, Nr)
    per_anchor = -log_prob.sum(dim=1) / other.sum(dim=1)
    return per_anchor.mean()


def relu_embedding(normalized_z: Tensor) -> Tensor:
    """The embedding the release's ``L_UL`` sees: ``relu`` of the normalised projection.

    The release's classifier head ``Sequential(ReLU(inplace=True), Linear)`` runs on the
    normalised projection the model also returns, and its in-place ReLU overwrites that tensor
    (core/model/resnet.py, ``SupConResNet.forward``), so the loss receives ``relu(z)`` (not
    renormalised). Gradients flow through the ReLU's mask, as in the release.

    Args:
        normalized_z: ``(N, D)`` L2-normalised embeddings.

    Returns:
        ``(N, D)`` ``relu(normalized_z)`` (a new tensor; the input is not modified).
    """
    return F.relu(normalized_z)


def _check_inputs(
    forget_z: Tensor, forget_y: Tensor, retain_z: Tensor, retain_y: Tensor, temperature: float
) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if forget_z.ndim != 2 or retain_z.ndim != 2 or forget_z.shape[1] != retain_z.shape[1]:
        raise ValueError(
            "forget_z and retain_z must be (Nf, D) and (Nr, D) with the same D; got "
            f"{tuple(forget_z.shape)} and {tuple(retain_z.shape)}"
        )
    if forget_y.shape != forget_z.shape[:1] or retain_y.shape != retain_z.shape[:1]:
        raise ValueError(
            "labels must be (Nf,) and (Nr,) matching the embeddings; got "
            f"{tuple(forget_y.shape)} for {tuple(forget_z.shape)} and "
            f"{tuple(retain_y.shape)} for {tuple(retain_z.shape)}"
        )
