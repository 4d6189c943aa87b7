"""How far an unlearned model is from the model retrained without the forget set (issue #5).

Output distances compare the two models' predictions on the same images (usually ``D_u_tr``):

- :func:`js_divergence`: mean Jensen–Shannon divergence of the softmax outputs (natural log, so
  in ``[0, ln 2]``); 0 when the outputs agree.
- :func:`activation_distance`: mean L2 distance between the softmax outputs (Chundawat et al.,
  AAAI 2023, "Can bad teaching induce forgetting?"); in ``[0, sqrt(2)]``.

:func:`weight_distance` is the L2 distance between the parameters. The summary scores compare
accuracies (and MIA-efficacy) with the retrained model's:

- :func:`avg_gap` (Fan et al., ICLR 2024, SalUn): mean absolute difference over UA, RA, TA and
  MIA-efficacy; 0 = indistinguishable from retraining, lower is better.
- :func:`tow` (Zhao et al., NeurIPS 2024, "What makes unlearning hard and what to do about it"):
  tug-of-war, the product of ``1 - |Δ accuracy|`` over forget, retain and test; 1 is best.

All are in fractions, as results.json; Fan et al. and Zhao et al. print percentages (x100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from conun.evaluation.accuracy import model_logits

DISTANCE_COLUMNS: dict[str, tuple[str, str]] = {
    "js_divergence": (
        "mean Jensen–Shannon divergence (nats) of the softmax outputs to the retrained model's",
        "lower is better (0 = same outputs, ln 2 = disjoint)",
    ),
    "activation_distance": (
        "mean L2 distance between the softmax outputs and the retrained model's",
        "lower is better",
    ),
    "weight_distance": (
        "L2 distance between all parameters and the retrained model's",
        "lower is better (only comparable between runs from the same original)",
    ),
    "avg_gap": (
        "mean |Δ| to retrain over UA = 1 - forget acc, RA, TA and MIA-efficacy (Fan et al. 2024)",
        "lower is better (0 = retrain)",
    ),
    "tow": (
        "product of 1 - |Δ acc| to retrain over forget, retain and test (Zhao et al. 2024)",
        "higher is better (1 = retrain)",
    ),
}
"""Every key :func:`output_distances` and :func:`summary_scores` return → (meaning, direction)."""


# --- output distances --------------------------------------------------------------------------


def _check_pair(first: Tensor, second: Tensor) -> None:
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            "outputs must both be (N, C) of the same shape; got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )


def jensen_shannon(p: Tensor, q: Tensor) -> Tensor:
    """Per-row Jensen–Shannon divergence of two batches of probability vectors (natural log).

    ``JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)`` with ``m = (p + q) / 2``; terms with ``p_i = 0``
    contribute 0 (the limit of ``x log x``), so one-hot rows are fine.

    Args:
        p: ``(N, C)`` rows summing to 1.
        q: ``(N, C)`` rows summing to 1.

    Returns:
        ``(N,)`` divergences in ``[0, ln 2]``, float64.
    """
    _check_pair(p, q)
    p, q = p.double(), q.double()
    m = (p + q) / 2

    def kl_to_m(x: Tensor) -> Tensor:
        # Where x > 0, m >= x / 2 > 0, so the log is finite; elsewhere the term is 0.
        ratio = torch.where(x > 0, x / torch.where(x > 0, m, 1.0), 1.0)
        return (x * torch.log(ratio)).sum(dim=1)

    # clamp: rounding can leave -1e-17 for identical rows, and ln 2 + 1e-16 for disjoint ones.
    return ((kl_to_m(p) + kl_to_m(q)) / 2).clamp(0.0, math.log(2))


def js_divergence(logits: Tensor, reference_logits: Tensor) -> float:
    """Mean over samples of the Jensen–Shannon divergence of two models' softmax outputs.

    Args:
        logits: ``(N, C)`` outputs of the audited model.
        reference_logits: ``(N, C)`` outputs of the retrained model on the same images.

    Returns:
        Mean divergence in nats, in ``[0, ln 2]``.
    """
    _check_pair(logits, reference_logits)
    p = torch.softmax(logits.double(), dim=1)
    q = torch.softmax(reference_logits.double(), dim=1)
    return float(jensen_shannon(p, q).mean())


def activation_distance(logits: Tensor, reference_logits: Tensor) -> float:
    """Mean over samples of ``‖softmax(a) - softmax(b)‖₂`` (Chundawat et al. 2023).

    Args:
        logits: ``(N, C)`` outputs of the audited model.
        reference_logits: ``(N, C)`` outputs of the retrained model on the same images.

    Returns:
        Mean distance in ``[0, sqrt(2)]``.
    """
    _check_pair(logits, reference_logits)
    p = torch.softmax(logits.double(), dim=1)
    q = torch.softmax(reference_logits.double(), dim=1)
    return float(torch.linalg.vector_norm(p - q, dim=1).mean())


def weight_distance(model: nn.Module, reference: nn.Module) -> float:
    """L2 norm of the difference of all parameters, ``sqrt(Σ ‖w - w_ref‖²)``.

    Parameters are matched by name; buffers (e.g. batch-norm running statistics) are not
    weights and are left out.

    Raises:
        ValueError: the models' parameter names or shapes differ (different architectures);
            the message names the first differences.
    """
    ours = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    problems = [f"{name} only in the audited model" for name in ours if name not in theirs]
    problems += [f"{name} only in the reference model" for name in theirs if name not in ours]
    problems += [
        f"{name}: shape {tuple(ours[name].shape)} vs {tuple(theirs[name].shape)}"
        for name in ours
        if name in theirs and ours[name].shape != theirs[name].shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise ValueError(
            f"cannot compare weights of different architectures ({len(problems)} mismatched "
            f"parameters): {shown}"
        )
    with torch.no_grad():
        total = sum(
            (
                float(torch.sum((weight.double().cpu() - theirs[name].double().cpu()) ** 2))
                for name, weight in ours.items()
            ),
            0.0,
        )
    return math.sqrt(total)


def output_distances(
    model: nn.Module,
    reference: nn.Module,
    images: Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """``js_divergence``, ``activation_distance`` and ``weight_distance`` of ``model`` to the
    retrained ``reference``, the output distances on ``images`` (usually ``D_u_tr``).

    Args:
        model: the audited (unlearned) model.
        reference: the model retrained on ``D_r_tr``.
        images: ``(N, C_in, H, W)`` normalised images.
        batch_size: images per forward pass.
        device: where to run both models; None = where each is.
        channels_last: feed batches in channels_last format.
    """

    def logits(of: nn.Module) -> Tensor:
        return model_logits(
            of, images, batch_size=batch_size, device=device, channels_last=channels_last
        )

    ours, theirs = logits(model), logits(reference)
    return {
        "js_divergence": js_divergence(ours, theirs),
        "activation_distance": activation_distance(ours, theirs),
        "weight_distance": weight_distance(model, reference),
    }


# --- summary scores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlearningScores:
    """What the summary scores compare, as fractions in [0, 1].

    Attributes:
        forget_acc: accuracy on ``D_u_tr`` (UA = 1 - forget_acc).
        retain_acc: accuracy on ``D_r_tr`` (RA).
        test_acc: accuracy on the test set (TA).
        mia_efficacy: MIA-efficacy (:func:`conun.evaluation.privacy.mia_efficacy`); only
            :func:`avg_gap` needs it.
    """

    forget_acc: float
    retain_acc: float
    test_acc: float
    mia_efficacy: float | None = None

    @classmethod
    def from_metrics(
        cls, metrics: Mapping[str, float | None], *, test_key: str = "test_acc"
    ) -> UnlearningScores:
        """From a results.json ``metrics`` object (plus the audit's ``mia_efficacy``).

        Args:
            metrics: needs ``forget_train_acc``, ``retain_train_acc`` and ``test_key``.
            test_key: which test accuracy is TA; ``"retain_test_acc"`` (the test set without
                the forgotten classes) is the usual choice in the class scenario.
        """

        def value(key: str) -> float:
            found = metrics.get(key)
            if found is None:
                raise ValueError(f"metrics lack {key!r}: cannot compare with retraining")
            return float(found)

        efficacy = metrics.get("mia_efficacy")
        return cls(
            forget_acc=value("forget_train_acc"),
            retain_acc=value("retain_train_acc"),
            test_acc=value(test_key),
            mia_efficacy=None if efficacy is None else float(efficacy),
        )


def avg_gap(unlearned: UnlearningScores, retrained: UnlearningScores) -> float:
    """Avg. Gap of Fan et al. (ICLR 2024): mean of ``|metric - metric_retrain|`` over UA, RA, TA
    and MIA-efficacy. ``|ΔUA| = |Δ forget_acc|`` since UA = 1 - forget_acc. Lower is better."""
    if unlearned.mia_efficacy is None or retrained.mia_efficacy is None:
        raise ValueError("Avg. Gap needs the MIA-efficacy of both models (run the privacy audit)")
    gaps = (
        abs((1 - unlearned.forget_acc) - (1 - retrained.forget_acc)),
        abs(unlearned.retain_acc - retrained.retain_acc),
        abs(unlearned.test_acc - retrained.test_acc),
        abs(unlearned.mia_efficacy - retrained.mia_efficacy),
    )
    return sum(gaps) / len(gaps)


def tow(unlearned: UnlearningScores, retrained: UnlearningScores) -> float:
    """Tug-of-war of Zhao et al. (2024): ``Π (1 - |acc - acc_retrain|)`` over forget, retain and
    test accuracy. In [0, 1]; 1 = the retrained model's accuracies; higher is better."""
    return (
        (1 - abs(unlearned.forget_acc - retrained.forget_acc))
        * (1 - abs(unlearned.retain_acc - retrained.retain_acc))
        * (1 - abs(unlearned.test_acc - retrained.test_acc))
    )


def summary_scores(unlearned: UnlearningScores, retrained: UnlearningScores) -> dict[str, float]:
    """``tow`` and, when both have a MIA-efficacy, ``avg_gap``."""
    scores = {"tow": tow(unlearned, retrained)}
    if unlearned.mia_efficacy is not None and retrained.mia_efficacy is not None:
        scores["avg_gap"] = avg_gap(unlearned, retrained)
    return scores
