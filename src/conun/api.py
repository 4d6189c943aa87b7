"""The practitioner's API: unlearn a forget set from *your* model, with *your* data.

    import conun
    result = conun.unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r), held_out=(x_v, y_v))
    result.model            # your model, now holding the unlearned weights
    result.history          # forget accuracy against forget batches processed
    result.audit            # with audit=True: the membership-inference audit

Data are given as ``(images, labels)`` tensor pairs, :class:`~conun.data.arrays.ArrayDataset`,
or any map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, already transformed
the way the model expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit, Scenario
from conun.engine.task import StoppedBy
from conun.evaluation.privacy import audit_model
from conun.models.base import Classifier
from conun.models.wrap import wrap_model
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.unlearning import run_method

DataLike = ArrayDataset | tuple[Tensor, Tensor] | Dataset[Any]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

HELD_OUT_METRICS = ("test_acc", "forget_test_acc", "retain_test_acc")
"""The accuracies measured on ``held_out`` (the run's "test" set)."""


@dataclass
class UnlearnResult(Generic[ModuleT]):
    """What :func:`unlearn` returns.

    Attributes:
        model: the model you passed (the same object, also when conun wrapped it to run the
            method), now holding the unlearned weights, on the device it was on.
        seconds: wall-clock of the unlearning (final evaluation and audit excluded).
        forget_batches: forget batches processed (loop methods), else None.
        passes: passes over the forget set (loop methods), else None.
        history: forget-set accuracy (and held-out accuracy) against forget batches processed.
        stopped_by: "rule" when the stopping rule held, "max_passes" when the loop ran out of
            passes first, "done" for a method that is not a stopping loop and simply finished.
        metrics: accuracies after unlearning: ``forget_train_acc`` (``forget``),
            ``retain_train_acc`` (``retain``) and, with ``held_out``, ``test_acc`` on it (in the
            class scenario also ``forget_test_acc`` and ``retain_test_acc``: on its samples of
            the forgotten and of the other classes).
        audit: with ``audit=True``, the privacy audit of the unlearned model: membership
            inference with ``retain`` as members and ``held_out`` as non-members, keys and
            meanings as :data:`conun.evaluation.privacy.AUDIT_COLUMNS`; else None.
    """

    model: ModuleT
    seconds: float
    forget_batches: int | None
    passes: float | None
    history: list[dict[str, float]]
    stopped_by: StoppedBy
    metrics: dict[str, float] = field(default_factory=dict)
    audit: dict[str, float] | None = None


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
    images = torch.as_tensor(images)
    if not images.is_floating_point():
        # uint8 pixels in 0..255 cast as they are would be 255 times the scale the model was
        # trained on, if it was trained on [0, 1] floats as torchvision's ToTensor gives: the
        # run would "succeed" on meaningless inputs. The scale is the caller's to say.
        raise ValueError(
            f"{name} images are {images.dtype}; give floating-point images in the scale the "
            "model was trained on (e.g. images.float() / 255 for 0..255 pixels)"
        )
    images = images.to(torch.float32)
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(
            f"{name} images must be (N, C, H, W) or (N, H, W); got shape {tuple(images.shape)}"
        )
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} labels must be integer class indices; got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{name} labels must be (N,) with N = {images.shape[0]} (one per image); got shape "
            f"{tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return ArrayDataset(images, labels.to(torch.long))


def _check_model_dtype(model: nn.Module) -> None:
    """Refuse a model whose weights are not float32: every method computes in float32."""
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()})
    if dtypes and dtypes != ["torch.float32"]:
        raise ValueError(
            f"the model's weights are {', '.join(dtypes)}; conun unlearns float32 models: "
            "convert it with model.float() first (and back afterwards if you need to)"
        )


def _check_labels(parts: Mapping[str, ArrayDataset], num_classes: int) -> None:
    """Every label of every part is one of the model's ``num_classes`` classes."""
    for name, part in parts.items():
        bad = part.labels[(part.labels < 0) | (part.labels >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"{name} labels {sorted(set(bad.tolist()))[:5]} are not classes of the model: "
                f"labels must be in 0..{num_classes - 1}"
            )


def unlearn(
    model: ModuleT,
    forget: DataLike,
    retain: DataLike,
    method: str = "contrastive",
    *,
    held_out: DataLike | None = None,
    scenario: Literal["auto", "class", "sample"] = "auto",
    head: str | None = None,
    num_classes: int | None = None,
    options: Mapping[str, Any] | None = None,
    audit: bool = False,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    lr: float | None = None,
    max_passes: int | None = None,
    stop: bool = True,
    quiet: bool = True,
) -> UnlearnResult[ModuleT]:
    """Remove ``forget``'s influence from ``model`` while keeping ``retain``'s.

    The method runs on a copy of ``model``; when it has finished, the unlearned weights are
    loaded into ``model`` itself, so that a run that fails leaves ``model`` as it was.

    Args:
        model: a :class:`~conun.models.base.Classifier`, or any ``nn.Module`` classifier whose
            final layer is named by ``head`` (e.g. ``"fc"``): its input is the representation.
        forget: the samples to forget, ``(N_f, C, H, W)`` images and ``(N_f,)`` labels.
        retain: the samples to keep, ``(N_r, C, H, W)`` and ``(N_r,)``.
        method: a registered method name (``conun.methods.available_methods()``).
        held_out: ``(N_v, C, H, W)`` and ``(N_v,)`` samples the model never trained on; the
            stopping rule compares against them (required by the rule unless ``stop=False``),
            and the audit takes them as non-members (required by ``audit``).
        scenario: "class" (forget whole classes), "sample", or "auto": "class" when no forget
            label occurs in ``retain``.
        head: name of the model's final layer, when ``model`` is not a conun Classifier.
        num_classes: C; inferred from the head or the labels when omitted.
        options: the method's hyperparameters (e.g. ``{"temperature": 0.5}``, ``{"omega": 2}``),
            over the method's shipped defaults for the scenario.
        audit: also run the membership-inference audit on the unlearned model
            (:attr:`UnlearnResult.audit`).
        seed: seed of every random draw.
        device: where the method runs: "cpu", "cuda", "cuda:N" or "auto".
        batch_size: forget batch size (default: the method's, per scenario).
        lr: learning rate of the unlearning optimizer (default 1e-3, SGD momentum 0.9).
        max_passes: bound on passes over the forget set (default 20).
        stop: apply the stopping rule; False runs ``max_passes`` passes.
        quiet: no progress bar.

    Returns:
        ``model`` with the unlearned weights, and how the run went.

    Raises:
        ValueError: missing ``held_out`` for the stopping rule or the audit, inconsistent
            shapes, an unknown method, or invalid options (the allowed ones named).
    """
    if stop and held_out is None:
        raise ValueError(
            "the stopping rule needs held_out data the model never trained on; pass held_out=... "
            "or stop=False (then max_passes passes are run)"
        )
    if audit and held_out is None:
        raise ValueError(
            "the audit needs held_out data the model never trained on (its non-members); "
            "pass held_out=..."
        )
    _check_model_dtype(model)
    classifier = (
        model
        if isinstance(model, Classifier)
        else wrap_model(model, head=head, num_classes=num_classes)
    )
    if num_classes is not None and classifier.num_classes not in (None, num_classes):
        raise ValueError(
            f"num_classes={num_classes} but the model has {classifier.num_classes} classes"
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
    resolved: Scenario
    if scenario == "auto":
        overlap = torch.isin(forget_set.labels, retain_set.labels).any()
        resolved = "sample" if bool(overlap) else "class"
    else:
        resolved = scenario
    config = resolve_unlearn_config(
        method,
        resolved,
        dataset=None,
        layers=[
            (
                "conun.unlearn arguments",
                _config_layer(
                    seed=seed,
                    device=device,
                    stop=stop,
                    has_held_out=held_set is not None,
                    options=options,
                    batch_size=batch_size,
                    lr=lr,
                    max_passes=max_passes,
                ),
            )
        ],
    ).config
    train = ArrayDataset(
        torch.cat([part.images for part in parts]), torch.cat([part.labels for part in parts])
    )
    classes = num_classes or classifier.num_classes or int(train.labels.max()) + 1
    named = {"forget": forget_set, "retain": retain_set}
    _check_labels({**named, **({"held_out": held_set} if held_set is not None else {})}, classes)
    num_forget, num_retain = len(forget_set), len(retain_set)
    split = ForgetRetainSplit(
        resolved,
        len(train),
        torch.arange(num_forget),
        torch.arange(num_forget, num_forget + num_retain),
        torch.arange(num_forget + num_retain, len(train)),
        classes=tuple(int(c) for c in torch.unique(forget_set.labels))
        if resolved == "class"
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
    unlearned, record = run_method(
        config,
        classifier,
        data,
        split,
        train_config=None,
        original_seconds=None,
        quiet=quiet,
    )
    privacy = (
        audit_model(
            unlearned,
            data,
            split,
            seed=seed,
            batch_size=config.eval_batch_size,
            channels_last=config.channels_last,
        )
        if audit
        else None
    )
    # The method ran on a copy (wrapped or not): the caller's own module takes its weights.
    classifier.load_state_dict(unlearned.state_dict())
    # Without held_out the run's "test" set was the forget set itself: no held-out accuracy.
    dropped = HELD_OUT_METRICS if held_set is None else ()
    metrics = {
        key: float(value)
        for key, value in record.metrics.items()
        if key.endswith("_acc") and value is not None and key not in dropped
    }
    # Loops report "rule" or "max_passes"; other methods end their own way (their schedule).
    reason = record.extra.get("stopped_by")
    stopped_by: StoppedBy = reason if reason in ("rule", "max_passes") else "done"
    return UnlearnResult(
        model=model,
        seconds=record.seconds,
        forget_batches=record.forget_batches,
        passes=record.passes,
        history=record.history,
        stopped_by=stopped_by,
        metrics=metrics,
        audit=privacy,
    )


def _config_layer(
    *,
    seed: int,
    device: str,
    stop: bool,
    has_held_out: bool,
    options: Mapping[str, Any] | None,
    batch_size: int | None,
    lr: float | None,
    max_passes: int | None,
) -> dict[str, Any]:
    """The UnlearnConfig keys :func:`unlearn`'s arguments set, over the method's presets."""
    stopping: dict[str, Any] = {
        "rule": "auto" if stop else "none",
        "eval_set": "validation" if has_held_out else "test",
    }
    if max_passes is not None:
        stopping["max_passes"] = max_passes
    layer: dict[str, Any] = {
        "seed": seed,
        "device": device,
        "stopping": stopping,
        "options": dict(options or {}),
    }
    if batch_size is not None:
        layer["batch_size"] = batch_size
    if lr is not None:
        layer["optimizer"] = {"lr": lr}
    return layer


__all__ = ["DataLike", "UnlearnResult", "as_array_dataset", "unlearn"]
