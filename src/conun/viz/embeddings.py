"""The paper's Figure 1: t-SNE of the representations of retain and forget samples, per model.

One panel per model (the original before unlearning, the model after contrastive unlearning,
after neggrad, finetune, the retrained model, ...): the ``features(x)`` of the same samples,
embedded in 2-D with :class:`sklearn.manifold.TSNE`, retain samples as small dots coloured by
class, forget samples as larger black-edged stars coloured by class. After good unlearning the
forget samples leave their class's cluster (class scenario) or look like unseen samples of it
(sample scenario), as for the retrained model.

The functions take loaded models (or their features, or the projections), never checkpoint
paths: reading a checkpoint is the engine's job, and this package draws from what it is given
without importing the engine. The caller (a workflow such as the bench report, a benchmark
script, a notebook) loads the models and passes them in, e.g.
``embedding_projection({"original": original, "contrastive": unlearned}, images, labels,
is_forget, "figures/tsne", seed=0)``. Taking modules rather than state dicts also spares this
package the model registry, and lets a practitioner pass their own wrapped model
(:func:`conun.models.wrap_model`) directly.

Each panel is its own t-SNE (t-SNE axes carry no meaning across fits); every fit uses the same
seed and PCA initialisation, so the same models, samples and seed give the same figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import NDArray
from sklearn.manifold import TSNE
from torch import Tensor

from conun.models.base import Classifier
from conun.viz.figure import FigurePaths, new_figure, save_figure

#: Panels per row.
MAX_COLUMNS = 5


def extract_features(
    model: Classifier, images: Tensor, *, batch_size: int = 256
) -> NDArray[np.float64]:
    """The model's representation of every image, in eval mode and without gradients.

    The model is put back into training mode afterwards if it was in it; the images go to the
    device of the model's parameters batch by batch.

    Args:
        model: any model with ``features(x) -> (N, D)``.
        images: ``(N, C, H, W)`` normalised images.
        batch_size: images per forward pass.

    Returns:
        ``(N, D)`` float64 features on the CPU.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            chunks = [
                model.features(images[start : start + batch_size].to(device)).float().cpu()
                for start in range(0, images.shape[0], batch_size)
            ]
    finally:
        model.train(was_training)
    features = torch.cat(chunks).numpy().astype(np.float64)
    if features.ndim != 2:
        raise ValueError(f"features(x) must return (N, D); got shape {features.shape}")
    return features


def project_features(
    features: Mapping[str, NDArray[np.floating]],
    *,
    seed: int,
    perplexity: float = 30.0,
    normalize: bool = True,
) -> dict[str, NDArray[np.float64]]:
    """Embed each model's features in 2-D with t-SNE.

    Args:
        features: ``{model name: (N, D) features}``; the same N samples for every model.
        seed: t-SNE's ``random_state``.
        perplexity: t-SNE perplexity; must be below N.
        normalize: L2-normalise each feature vector first. Contrastive unlearning works on
            normalised representations (cosine geometry), so this is the default.

    Returns:
        ``{model name: (N, 2) coordinates}``, in the order given.

    Raises:
        ValueError: no models, differing N, or ``perplexity >= N``.
    """
    if not features:
        raise ValueError("no models to project: pass at least one {name: features}")
    sizes = {name: int(np.asarray(values).shape[0]) for name, values in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every model must see the same samples; got sample counts {sizes}")
    n = next(iter(sizes.values()))
    if not 0 < perplexity < n:
        raise ValueError(
            f"perplexity must be in (0, N) with N = {n} samples; got {perplexity} "
            "(pass more samples or a smaller perplexity)"
        )
    projections: dict[str, NDArray[np.float64]] = {}
    for name, values in features.items():
        points = np.asarray(values, dtype=np.float64)
        if normalize:
            points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        projections[name] = np.asarray(tsne.fit_transform(points), dtype=np.float64)
    return projections


def embedding_projection_figure(
    projections: Mapping[str, NDArray[np.floating]],
    labels: Tensor | NDArray[np.integer],
    is_forget: Tensor | NDArray[np.bool_],
    *,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Draw one scatter panel per model from 2-D coordinates.

    Args:
        projections: ``{model name: (N, 2) coordinates}`` (:func:`project_features`).
        labels: ``(N,)`` class indices, for the colours.
        is_forget: ``(N,)`` booleans, ``True`` for forget samples.
        class_names: names for the class legend (10 classes or fewer; more get no legend).

    Returns:
        The figure. Each panel's Axes holds two collections: ``collections[0]`` the retain
        samples (label ``"retain"``, offsets ``coordinates[~is_forget]``) and
        ``collections[1]`` the forget samples (label ``"forget"``, offsets
        ``coordinates[is_forget]``); the panel title is the model name.
    """
    label_array, forget_mask = _check_samples(labels, is_forget)
    if not projections:
        raise ValueError("no projections to draw")
    for name, points in projections.items():
        if np.asarray(points).shape != (label_array.shape[0], 2):
            raise ValueError(
                f"projection {name!r} must be (N, 2) with N = {label_array.shape[0]}; "
                f"got {np.asarray(points).shape}"
            )
    num_classes = int(label_array.max()) + 1
    palette = matplotlib.colormaps["tab10" if num_classes <= 10 else "turbo"]
    colours = palette(label_array if num_classes <= 10 else label_array / max(num_classes - 1, 1))

    columns = min(len(projections), MAX_COLUMNS)
    rows = -(-len(projections) // columns)
    figure = new_figure(3.3 * columns + (1.4 if num_classes <= 10 else 0.0), 3.3 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = list(grid.flat)
    for ax, (name, points) in zip(axes, projections.items(), strict=False):
        coordinates = np.asarray(points)
        retain = ~forget_mask
        ax.scatter(
            coordinates[retain, 0],
            coordinates[retain, 1],
            c=colours[retain],
            s=6,
            alpha=0.5,
            linewidths=0,
            label="retain",
        )
        ax.scatter(
            coordinates[forget_mask, 0],
            coordinates[forget_mask, 1],
            c=colours[forget_mask],
            s=45,
            marker="*",
            edgecolors="black",
            linewidths=0.5,
            label="forget",
            zorder=3,
        )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(projections) :]:
        ax.set_axis_off()

    handles: list[Line2D] = [
        Line2D([], [], marker="o", linestyle="", color="0.5", markersize=4, label="retain"),
        Line2D(
            [],
            [],
            marker="*",
            linestyle="",
            color="0.5",
            markeredgecolor="black",
            markersize=9,
            label="forget",
        ),
    ]
    if num_classes <= 10:
        names = list(class_names) if class_names is not None else [str(c) for c in range(10)]
        handles += [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color=palette(c),
                markersize=5,
                label=names[c] if c < len(names) else str(c),
            )
            for c in np.unique(label_array)
        ]
    figure.legend(handles=handles, loc="outside right center", fontsize="small")
    return figure


def model_embedding_figure(
    models: Mapping[str, Classifier],
    images: Tensor,
    labels: Tensor | NDArray[np.integer],
    is_forget: Tensor | NDArray[np.bool_],
    *,
    seed: int,
    perplexity: float = 30.0,
    normalize: bool = True,
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """t-SNE of each model's features of the same samples, one panel per model.

    t-SNE is quadratic-ish in N: pass a sample of a few thousand at most (the paper's figure
    shows the forget set and a retain sample of similar size).

    Args:
        models: ``{panel title: loaded model}`` in panel order, e.g. ``{"before": original,
            "contrastive": ..., "retrain": ...}``; each exposes ``features(x) -> (N, D)``.
        images: ``(N, C, H, W)`` normalised images, the same for every model.
        labels: ``(N,)`` class indices.
        is_forget: ``(N,)`` booleans, ``True`` for forget samples (at least one).
        seed: t-SNE seed; the same inputs and seed give the same figure.
        perplexity: t-SNE perplexity, below N.
        normalize: L2-normalise the features before t-SNE (see :func:`project_features`).
        batch_size: images per forward pass.
        class_names: names for the class legend.

    Returns:
        The figure.
    """
    if not models:
        raise ValueError("no models given: pass {panel title: model}")
    _check_samples(labels, is_forget, n=int(images.shape[0]))
    features = {
        name: extract_features(model, images, batch_size=batch_size)
        for name, model in models.items()
    }
    projections = project_features(features, seed=seed, perplexity=perplexity, normalize=normalize)
    return embedding_projection_figure(projections, labels, is_forget, class_names=class_names)


def embedding_projection(
    models: Mapping[str, Classifier],
    images: Tensor,
    labels: Tensor | NDArray[np.integer],
    is_forget: Tensor | NDArray[np.bool_],
    out_stem: str | os.PathLike[str],
    *,
    seed: int,
    perplexity: float = 30.0,
    normalize: bool = True,
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> FigurePaths:
    """:func:`model_embedding_figure`, written as ``<out_stem>.png`` and ``.pdf``.

    Returns:
        The paths written.
    """
    figure = model_embedding_figure(
        models,
        images,
        labels,
        is_forget,
        seed=seed,
        perplexity=perplexity,
        normalize=normalize,
        batch_size=batch_size,
        class_names=class_names,
    )
    return save_figure(figure, out_stem)


def _check_samples(
    labels: Tensor | NDArray[np.integer],
    is_forget: Tensor | NDArray[np.bool_],
    n: int | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    label_array = _to_numpy(labels)
    forget_array = _to_numpy(is_forget)
    if label_array.ndim != 1 or not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(
            "labels must be (N,) integers; "
            f"got shape {label_array.shape}, dtype {label_array.dtype}"
        )
    if forget_array.dtype != np.bool_ or forget_array.shape != label_array.shape:
        raise ValueError(
            "is_forget must be an (N,) boolean mask like labels "
            f"{label_array.shape}; got shape {forget_array.shape}, dtype {forget_array.dtype}"
        )
    if n is not None and label_array.shape[0] != n:
        raise ValueError(f"labels and is_forget must have N = {n} entries, one per image")
    if not forget_array.any():
        raise ValueError("is_forget marks no sample: the figure highlights the forget set")
    if label_array.min() < 0:
        raise ValueError("labels must be class indices >= 0")
    return label_array.astype(np.int64), forget_array.astype(np.bool_)


def _to_numpy(values: Tensor | NDArray[np.generic]) -> NDArray[np.generic]:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
