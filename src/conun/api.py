"""The practitioner's API: unlearn a forget set from *your* model, with *your* data.

    import conun
    result = conun.unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r), held_out=(x_v, y_v))
    result.model            # the unlearned classifier
    result.history          # forget accuracy against forget batches processed

Data are given as ``(images, labels)`` tensor pairs, :class:`~conun.data.arrays.ArrayDataset`,
or any map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, already transformed
the way the model expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from conun.config import build_unlearn_config
from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.methods.base import UnlearningTask, get_method
from conun.models.base import Classifier
from conun.models.wrap import wrap_model
from conun.reproducibility import seed_everything

DataLike = ArrayDataset | tuple[Tensor, Tensor] | Dataset[Any]


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns.

    Attributes:
        model: the unlearned classifier (the input model, modified in place).
        seconds: wall-clock of the unlearning.
        forget_batches: forget batches processed (loop methods).
        passes: passes over the forget set (loop methods).
        history: forget-set accuracy (and held-out accuracy) against forget batches processed.
        stopped_by: "rule" when the stopping rule held, "max_passes" otherwise.
    """

    model: Classifier
    seconds: float
    forget_batches: int | None
    passes: float | None
    history: list[dict[str, float]]
    stopped_by: str | None


def as_array_dataset(data: DataLike, *, name: str) -> ArrayDataset:
    """Materialise ``data`` as tensors ``(N, C, H, W)`` float32 and ``(N,)`` int64."""
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"{name} must be (images, labels); got a tuple of {len(data)}")
        images, labels = data
    else:
        try:
            length = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{name} must be a map-style Dataset with a length") from None
        if length == 0:
            raise ValueError(f"{name} is empty")
        pairs = [data[i] for i in range(length)]
        images = torch.stack([torch.as_tensor(image) for image, _ in pairs])
        labels = torch.as_tensor([int(label) for _, label in pairs])
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[:, None]
    return ArrayDataset(images, torch.as_tensor(labels, dtype=torch.long))


def unlearn(
    model: nn.Module,
    forget: DataLike,
    retain: DataLike,
    method: str = "contrastive",
    *,
    held_out: DataLike | None = None,
    scenario: Literal["auto", "class", "sample"] = "auto",
    head: str | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    lr: float | None = None,
    max_passes: int | None = None,
    stop: bool = True,
    quiet: bool = True,
    **options: Any,
) -> UnlearnResult:
    """Remove ``forget``'s influence from ``model`` while keeping ``retain``'s.

    Args:
        model: a :class:`~conun.models.base.Classifier`, or any ``nn.Module`` classifier whose
            final layer is named by ``head`` (e.g. ``"fc"``): its input is the representation.
        forget: the samples to forget, ``(N_f, C, H, W)`` images and ``(N_f,)`` labels.
        retain: the samples to keep, ``(N_r, C, H, W)`` and ``(N_r,)``.
        method: a registered method name (``conun.methods.available_methods()``).
        held_out: samples the model never trained on; the stopping rule compares against them
            (required by the rule unless ``stop=False``).
        scenario: "class" (forget whole classes), "sample", or "auto": "class" when no forget
            label occurs in ``retain``.
        head: name of the model's final layer, when ``model`` is not a conun Classifier.
        num_classes: C; inferred from the head or the labels when omitted.
        seed: seed of every random draw.
        device: "cpu", "cuda", "cuda:N" or "auto".
        batch_size: forget batch size (default: the method's, per scenario).
        lr: learning rate of the unlearning optimizer (default 1e-3, SGD momentum 0.9).
        max_passes: bound on passes over the forget set (default 20).
        stop: apply the stopping rule; False runs ``max_passes`` passes.
        quiet: no progress bar.
        **options: the method's hyperparameters (e.g. ``temperature``, ``omega``,
            ``lambda_ul``).

    Returns:
        The unlearned model (modified in place) and how the run went.
    """
    if stop and held_out is None:
        raise ValueError(
            "the stopping rule needs held_out data the model never trained on; pass held_out=... "
            "or stop=False (then max_passes passes are run)"
        )
    classifier = (
        model
        if isinstance(model, Classifier)
        else wrap_model(model, head=head, num_classes=num_classes)
    )
    forget_set = as_array_dataset(forget, name="forget")
    retain_set = as_array_dataset(retain, name="retain")
    held_set = as_array_dataset(held_out, name="held_out") if held_out is not None else None
    parts = [forget_set, retain_set, *([held_set] if held_set is not None else [])]
    shapes = {tuple(part.images.shape[1:]) for part in parts}
    if len(shapes) != 1:
        raise ValueError(
            f"forget, retain and held_out images must share one (C, H, W); got {sorted(shapes)}"
        )
    train = ArrayDataset(
        torch.cat([part.images for part in parts]), torch.cat([part.labels for part in parts])
    )
    classes = num_classes or classifier.num_classes or int(train.labels.max()) + 1
    num_forget, num_retain = len(forget_set), len(retain_set)
    forget_index = torch.arange(num_forget)
    retain_index = torch.arange(num_forget, num_forget + num_retain)
    validation_index = torch.arange(num_forget + num_retain, len(train))
    if scenario == "auto":
        overlap = torch.isin(forget_set.labels, retain_set.labels).any()
        scenario = "sample" if bool(overlap) else "class"
    split = ForgetRetainSplit(
        scenario,
        len(train),
        forget_index,
        retain_index,
        validation_index,
        classes=tuple(int(c) for c in torch.unique(forget_set.labels))
        if scenario == "class"
        else (),
    )
    # The rule compares against the held-out samples (the "validation" split of this ad-hoc
    # dataset). Without them (stop=False) the history tracks the forget set against itself.
    data = DatasetBundle(
        "in-memory",
        train,
        held_set if held_set is not None else forget_set,
        classes,
        mean=(0.0,),
        std=(1.0,),
    )
    stopping: dict[str, Any] = {
        "rule": "auto" if stop else "none",
        "eval_set": "validation" if held_set is not None else "test",
    }
    if max_passes is not None:
        stopping["max_passes"] = max_passes
    layer: dict[str, Any] = {
        "seed": seed,
        "device": device,
        "stopping": stopping,
        "options": options,
    }
    if batch_size is not None:
        layer["batch_size"] = batch_size
    if lr is not None:
        layer["optimizer"] = {"lr": lr}
    config = build_unlearn_config(method, scenario, [layer])
    runner = get_method(method).for_scenario(scenario, config.options)
    task = UnlearningTask(
        model=classifier,
        data=data,
        split=split,
        config=config,
        train_config=None,
        original_seconds=None,
        generator=seed_everything(seed),
        quiet=quiet,
    )
    outcome = runner.run(task)
    return UnlearnResult(
        model=outcome.model,
        seconds=outcome.seconds,
        forget_batches=outcome.forget_batches,
        passes=outcome.passes,
        history=outcome.history,
        stopped_by=outcome.extra.get("stopped_by"),
    )
