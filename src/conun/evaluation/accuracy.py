"""Logits and predictions of a model, and its accuracies on every split of a forget request
(the metrics of results.json)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.distributed.device import to_device
from conun.distributed.group import gather_rows, shard
from conun.models.base import Classifier, ModelOutput
from conun.models.folding import folded_batchnorm

_Output = TypeVar("_Output")


@dataclass(frozen=True)
class SplitMetrics:
    """Accuracies (fractions in [0, 1]) with the meanings of results.json; None = not defined."""

    test_acc: float
    forget_train_acc: float | None = None
    forget_test_acc: float | None = None
    retain_train_acc: float | None = None
    retain_test_acc: float | None = None
    mia_forget_member_rate: float | None = None
    mia_retain_member_rate: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def _over_batches(
    model: nn.Module,
    images: Tensor,
    forward: Callable[[Tensor], _Output],
    *,
    batch_size: int,
    device: torch.device | str | None,
    channels_last: bool,
) -> list[_Output]:
    """``forward`` of each batch of ``images`` with the model in eval mode on ``device`` (None:
    where its parameters are), without gradients, BatchNorm folded where that cannot change the
    result (:func:`conun.models.folding.folded_batchnorm`); its mode and device are restored
    afterwards.

    Raises:
        ValueError: ``images`` is empty.
    """
    if images.shape[0] == 0:
        raise ValueError("no images to compute outputs of")
    home = next(model.parameters()).device
    target = home if device is None else torch.device(device)
    was_training = model.training
    # Moving a module walks all its tensors: only when it has to move.
    moves = target != home
    model.eval()
    if moves:
        model.to(target)
    try:
        # BatchNorm folded into the convolutions before it (eval mode only; the model's own
        # modules are back afterwards): about half the time of a small CNN's evaluation on CPU.
        with torch.no_grad(), folded_batchnorm(model):
            return [
                forward(
                    to_device(
                        images[start : start + batch_size], target, channels_last=channels_last
                    )
                )
                for start in range(0, images.shape[0], batch_size)
            ]
    finally:
        model.train(was_training)
        if moves:
            model.to(home)


def model_logits(
    model: nn.Module,
    images: Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> Tensor:
    """Logits in eval mode.

    Args:
        model: the classifier; its mode and device are restored afterwards.
        images: ``(N, C_in, H, W)`` normalised images (any device).
        batch_size: images per forward pass.
        device: where to run; None = where the model's parameters are.
        channels_last: feed batches in channels_last format.

    Returns:
        ``(N, C)`` float32 logits on the CPU.

    Raises:
        ValueError: ``images`` is empty.
    """
    chunks = _over_batches(
        model,
        images,
        lambda batch: model(batch).float().cpu(),
        batch_size=batch_size,
        device=device,
        channels_last=channels_last,
    )
    return torch.cat(chunks)


def model_outputs(
    model: Classifier,
    images: Tensor,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> ModelOutput:
    """Features and logits in eval mode, in this process (no sharing out under torchrun).

    Args:
        model: the classifier; its mode is restored afterwards.
        images: ``(N, C_in, H, W)`` normalised images (any device).
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.

    Returns:
        ``features`` ``(N, D)`` and ``logits`` ``(N, C)``, float32 on the CPU.

    Raises:
        ValueError: ``images`` is empty.
    """

    def forward(batch: Tensor) -> tuple[Tensor, Tensor]:
        output = model.forward_features(batch)
        return output.features.float().cpu(), output.logits.float().cpu()

    chunks = _over_batches(
        model, images, forward, batch_size=batch_size, device=None, channels_last=channels_last
    )
    return ModelOutput(
        features=torch.cat([features for features, _ in chunks]),
        logits=torch.cat([logits for _, logits in chunks]),
    )


def gathered_logits(
    model: Classifier,
    images: Tensor,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> Tensor:
    """:func:`model_logits` of every image, shared out over the ranks under torchrun.

    Args:
        model: the classifier; its mode is restored afterwards.
        images: ``(N, C, H, W)`` normalised images (any device).
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.

    Returns:
        ``(N, K)`` float32 logits on the CPU, identical on every rank.
    """
    total = images.shape[0]
    # Under torchrun each rank computes its contiguous share; the shares are gathered back.
    mine = shard(torch.arange(total))
    if mine.numel() < total:
        start = int(mine[0]) if mine.numel() else 0
        images = images[start : start + mine.numel()]
    if images.shape[0] == 0:
        local = torch.empty(0, model.num_classes)
    else:
        local = model_logits(model, images, batch_size=batch_size, channels_last=channels_last)
    return gather_rows(local, total)


def predict(
    model: Classifier,
    images: Tensor,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> Tensor:
    """``(N,)`` int64 predicted classes on the CPU: the argmax of :func:`gathered_logits`
    (same arguments)."""
    logits = gathered_logits(model, images, batch_size=batch_size, channels_last=channels_last)
    return logits.argmax(dim=1)


def accuracy(
    model: Classifier, data: ArrayDataset, *, batch_size: int = 1024, channels_last: bool = False
) -> float | None:
    """Fraction of ``data`` classified correctly, or None for an empty set."""
    if len(data) == 0:
        return None
    hits = predict(model, data.images, batch_size=batch_size, channels_last=channels_last)
    return float((hits == data.labels).double().mean())


def _mean_or_none(correct: Tensor, index: Tensor) -> float | None:
    return float(correct[index].double().mean()) if index.numel() else None


def evaluate_split(
    model: Classifier,
    data: DatasetBundle,
    split: ForgetRetainSplit | None,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> SplitMetrics:
    """Accuracy on ``D_u_tr``, ``D_u_ts``, ``D_r_tr``, ``D_r_ts`` and ``D_ts``.

    Each image is classified once; the per-split accuracies are slices of those predictions.

    Args:
        model: the classifier to evaluate.
        data: the dataset the split indexes into.
        split: the forget request; None evaluates the original setting (scenario "none"):
            ``retain_train_acc`` is then the accuracy on the whole training set.
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.
    """

    def correct(part: ArrayDataset) -> Tensor:
        predicted = predict(model, part.images, batch_size=batch_size, channels_last=channels_last)
        return predicted == part.labels

    test_correct, train_correct = correct(data.test), correct(data.train)
    test_acc = float(test_correct.double().mean())
    if split is None:
        return SplitMetrics(
            test_acc=test_acc, retain_train_acc=float(train_correct.double().mean())
        )
    forget_test: float | None = None
    retain_test: float | None = None
    if split.scenario == "class":
        in_forget_classes = torch.isin(data.test.labels, torch.tensor(split.classes))
        forget_test = _mean_or_none(test_correct, torch.nonzero(in_forget_classes).flatten())
        retain_test = _mean_or_none(test_correct, torch.nonzero(~in_forget_classes).flatten())
    return SplitMetrics(
        test_acc=test_acc,
        forget_train_acc=_mean_or_none(train_correct, split.forget),
        forget_test_acc=forget_test,
        retain_train_acc=_mean_or_none(train_correct, split.retain),
        retain_test_acc=retain_test,
    )
