"""Unlearning configs resolved from their layers, with where every value came from.

Layers, last wins:

1. the method's defaults for the scenario (:meth:`conun.methods.UnlearningMethod.defaults`, the
   one place a method's numbers live, each citing its source), over :class:`UnlearnConfig`'s own
   defaults for what no method sets (seed, device, ...);
2. the dataset layer ``configs/unlearn/<dataset>/<method>-<scenario>.yaml``, where there is one
   (values tuned for that dataset; it only overrides);
3. the caller's layers (a ``--config`` file, command-line flags, an API call's arguments);
4. ``key.sub=value`` overrides (``--set``).

The CLI, the demo, the API, the bench and the scripts all resolve their configs here, so that
one request gets the same settings whichever way it comes. It lives at the workflow layer
because the first layer needs the method registry, which sits above :mod:`conun.config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from conun.config import (
    ConfigError,
    OptimizerConfig,
    StoppingConfig,
    UnlearnConfig,
    check_no_interpolation,
    format_validation_error,
    preset_path,
    read_yaml,
)
from conun.data.splits import Scenario
from conun.methods import UnlearningMethod, get_method
from conun.models.registry import available_models
from conun.workflows.names import check_method_name

__all__ = ["ResolvedConfig", "dataset_layer_path", "resolve_unlearn_config"]

BUILT_IN = "conun default (UnlearnConfig)"
"""Source of a value that neither the method nor any layer sets (seed, device, ...)."""

SCENARIOS: tuple[Scenario, ...] = ("class", "sample")


@dataclass(frozen=True)
class ResolvedConfig:
    """An :class:`UnlearnConfig` and the origin of each of its values.

    Attributes:
        config: the validated config; ``config.options`` holds every option of the method.
        sources: dotted key of every leaf of ``config`` (``optimizer.lr``, ``options.omega``)
            -> the layer that set it last, e.g. ``default (contrastive, class)``, ``dataset
            layer fashion-mnist/contrastive-class.yaml``, ``--config user.yaml`` or ``--set
            optimizer.lr=0.01``.
        scenario: the scenario the config was resolved for.
        dataset: the dataset whose layer was looked up (None: none was).
        model: the model whose layer (under the dataset's) was looked up (None: none was).
    """

    config: UnlearnConfig
    sources: dict[str, str]
    scenario: Scenario
    dataset: str | None
    model: str | None = None

    def to_yaml_with_sources(self) -> str:
        """The resolved config as YAML, each value followed by ``# from: <source>``.

        The YAML loads back (``yaml.safe_load``) to ``config.model_dump(mode="json")``, so the
        printed config can be saved and passed back with ``--config``. A header comment names
        the method, scenario and dataset.
        """
        dataset = f", dataset {self.dataset}" if self.dataset else ", no dataset layer"
        if self.dataset and self.model:
            dataset += f", model {self.model}"
        header = (
            f"# conun unlearn config: method {self.config.method}, "
            f"{self.scenario} scenario{dataset}"
        )
        lines: list[tuple[str, str | None]] = []
        _yaml_lines(self.config.model_dump(mode="json"), "", 0, self.sources, lines)
        width = max(len(text) for text, source in lines if source is not None)
        rendered = [
            text if source is None else f"{text.ljust(width)}  # from: {source}"
            for text, source in lines
        ]
        return "\n".join([header, *rendered]) + "\n"


def dataset_layer_path(
    method: str, scenario: str, dataset: str, model: str | None = None
) -> str | None:
    """The shipped dataset layer of ``method`` on ``scenario``, as a path relative to
    ``configs/unlearn/`` (``fashion-mnist/contrastive-class.yaml``), or None if there is none.
    With ``model``: the dataset-and-model layer (``fashion-mnist/small_cnn/contrastive-class.yaml``,
    settings that name the model's modules or were chosen for that architecture only)."""
    if model is not None and model not in available_models():
        return None  # only registered models have shipped layers (not timm:..., hf:<dir>)
    folder = f"{dataset}/{model}" if model is not None else dataset
    if preset_path(f"unlearn/{folder}", f"{method}-{scenario}") is None:
        return None
    return f"{folder}/{method}-{scenario}.yaml"


def resolve_unlearn_config(
    method: str,
    scenario: str,
    *,
    dataset: str | None,
    model: str | None = None,
    layers: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
    overrides: Sequence[str] = (),
) -> ResolvedConfig:
    """Resolve the :class:`UnlearnConfig` of ``method`` on ``scenario`` and record the source of
    each value.

    Args:
        method: a registered method name.
        scenario: ``class`` or ``sample``.
        dataset: the dataset whose layer ``configs/unlearn/<dataset>/<method>-<scenario>.yaml``
            applies, where there is one; None: no dataset layer.
        model: the registry name of the model to be unlearned (a checkpoint's ``meta.model``):
            with ``dataset``, the layer
            ``configs/unlearn/<dataset>/<model>/<method>-<scenario>.yaml`` applies after the
            dataset layer, where there is one. None: no model layer.
        layers: ``(label, mapping)`` pairs applied in order after the dataset layer; the label
            is the source recorded for the values a layer sets (``--config user.yaml``,
            ``--seed``). None mappings are skipped.
        overrides: dotted ``key.sub=value`` strings (values parsed as YAML), applied last, each
            recorded as ``--set key.sub=value``.

    Returns:
        The validated config, with ``options`` complete (every option of the method, validated
        by its ``Options`` model), and the source of every value.

    Raises:
        ConfigError: unknown method; a layer asking for another method; keys at the wrong level
            or unknown (naming the allowed ones, and where a misplaced key belongs); malformed
            overrides; invalid values.
        UnsupportedScenarioError: the method is not meant for ``scenario``.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    check_method_name(method)
    method_class = get_method(method)
    chosen: Scenario = "class" if scenario == "class" else "sample"
    stack: list[tuple[str, Mapping[str, Any]]] = [
        (BUILT_IN, UnlearnConfig().model_dump(mode="json")),
        (f"default ({method}, {scenario})", method_class.defaults(chosen)),
    ]
    if dataset is not None:
        # The dataset's layer, then the dataset-and-model layer over it, where shipped.
        lookups = [("dataset", None)] + ([("model", model)] if model is not None else [])
        for kind, layer_model in lookups:
            relative = dataset_layer_path(method, scenario, dataset, layer_model)
            if relative is not None:
                folder, _, _ = relative.rpartition("/")
                path = preset_path(f"unlearn/{folder}", f"{method}-{scenario}")
                assert path is not None
                stack.append((f"{kind} layer {relative}", read_yaml(path)))
    stack.extend((label, layer) for label, layer in layers if layer is not None)
    stack.extend((f"--set {override}", _override_layer(override)) for override in overrides)

    merged: Any = OmegaConf.create({})
    sources: dict[str, str] = {}
    for label, layer in stack:
        check_no_interpolation(layer, label)
    for label, layer in stack:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(layer)))
        except OmegaConfBaseException as error:
            raise ConfigError(f"{label}: cannot merge this layer: {error}") from None
        for key in _leaf_keys(layer):
            sources[key] = label
    container = OmegaConf.to_container(merged, resolve=False)
    assert isinstance(container, dict)
    plain = {str(key): value for key, value in container.items()}
    if plain.get("method") != method:
        # The defaults merged below are the requested method's: another method's options and
        # numbers would be validated against the wrong model.
        raise ConfigError(
            f"invalid UnlearnConfig:\n  method: {sources.get('method')} asks for method "
            f"{plain.get('method')!r}, but the config is resolved for {method!r}; ask for "
            f"{plain.get('method')!r} as the method instead"
        )
    _check_levels(plain, method_class)
    try:
        config = UnlearnConfig.model_validate(plain)
    except ValidationError as error:
        raise ConfigError(format_validation_error("UnlearnConfig", error)) from None
    options = method_class.parse_options(chosen, config.options)
    config = config.model_copy(update={"options": options.model_dump(mode="json")})
    final = _leaf_keys(config.model_dump(mode="json"))
    return ResolvedConfig(
        config=config,
        sources={key: sources.get(key, BUILT_IN) for key in final},
        scenario=chosen,
        dataset=dataset,
        model=model if dataset is not None else None,
    )


def _override_layer(override: str) -> dict[str, Any]:
    """One ``key.sub=value`` override as a nested mapping."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    check_no_interpolation(override, f"--set {override}")
    try:
        layer = OmegaConf.to_container(OmegaConf.from_dotlist([override]), resolve=False)
    except OmegaConfBaseException as error:
        raise ConfigError(f"override {override!r} cannot be parsed: {error}") from None
    assert isinstance(layer, dict)
    return {str(key): value for key, value in layer.items()}


def _leaf_keys(layer: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of ``layer``: scalars, lists and empty mappings."""
    keys: list[str] = []
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys.extend(_leaf_keys(value, f"{dotted}."))
        else:
            keys.append(dotted)
    return keys


def _check_levels(plain: Mapping[str, Any], method_class: type[UnlearningMethod]) -> None:
    """Raise :class:`ConfigError` for keys at the wrong level or unknown anywhere, naming the
    allowed keys and, for a misplaced one, where it belongs (an option set at the top level or
    under ``optimizer``, an optimizer setting under ``options``, ...)."""
    option_names = list(method_class.Options.model_fields)
    sections: dict[str, list[str]] = {
        "": list(UnlearnConfig.model_fields),
        "optimizer.": list(OptimizerConfig.model_fields),
        "stopping.": list(StoppingConfig.model_fields),
        "options.": option_names,
    }
    problems: list[str] = []
    for prefix, allowed in sections.items():
        section = plain if not prefix else plain.get(prefix[:-1])
        if not isinstance(section, Mapping):
            continue  # not a mapping at all: the model's validation names the problem
        for key in section:
            if key in allowed:
                continue
            homes = [
                f"{other}{key}"
                for other, names in sections.items()
                if other != prefix and key in names
            ]
            hint = f"; did you mean {' or '.join(homes)}?" if homes else ""
            if prefix == "options.":
                what, kind = f"option of method {method_class.name!r}", "allowed options"
            else:
                what, kind = "key", f"allowed keys{' under ' + prefix[:-1] if prefix else ''}"
            listed = ", ".join(allowed) or "none"
            problems.append(f"  {prefix}{key}: unknown {what}{hint} ({kind}: {listed})")
    if problems:
        raise ConfigError("\n".join(["invalid UnlearnConfig:", *problems]))


def _yaml_lines(
    data: Mapping[str, Any],
    prefix: str,
    depth: int,
    sources: Mapping[str, str],
    lines: list[tuple[str, str | None]],
) -> None:
    """Append ``(line, source)`` for every entry of ``data``; mappings get a line of their own
    (source None) and their entries indented below it."""
    indent = "  " * depth
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        name = yaml.safe_dump(key, default_flow_style=True).removesuffix("\n...\n").strip()
        if isinstance(value, Mapping) and value:
            lines.append((f"{indent}{name}:", None))
            _yaml_lines(value, f"{dotted}.", depth + 1, sources, lines)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
            text = text.removesuffix("\n").removesuffix("\n...").strip()
            lines.append((f"{indent}{name}: {text}", sources.get(dotted, BUILT_IN)))
