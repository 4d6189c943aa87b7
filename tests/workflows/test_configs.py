"""Resolved unlearning configs: a method's defaults in code, dataset layers, the user's layers and
overrides, each value's source, and errors that name what is allowed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from conun.config import ConfigError, read_yaml
from conun.methods import METHODS, UnsupportedScenarioError, get_method
from conun.workflows.configs import BUILT_IN, ResolvedConfig, resolve_unlearn_config

UNLEARN_PRESETS = Path(str(resources.files("conun").joinpath("configs", "unlearn")))


def leaves(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every leaf of a nested mapping (empty mappings are leaves)."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_defaults_then_dataset_layer_with_their_sources() -> None:
    resolved = resolve_unlearn_config("contrastive", "class", dataset="fashion-mnist")
    config, sources = resolved.config, resolved.sources
    default, layer = (
        "default (contrastive, class)",
        "dataset layer fashion-mnist/contrastive-class.yaml",
    )
    # The dataset layer overrides two options; every other option keeps conun's class default.
    assert (config.options["lambda_ul"], config.options["lambda_ce"]) == (1.0, 4.0)
    assert sources["options.lambda_ul"] == sources["options.lambda_ce"] == layer
    assert config.options["detach_retain"] is True and config.options["temperature"] == 0.7
    assert sources["options.detach_retain"] == sources["options.temperature"] == default
    assert (config.batch_size, config.optimizer.lr, config.stopping.max_passes) == (64, 1e-3, 20)
    assert sources["batch_size"] == sources["optimizer.lr"] == sources["stopping.rule"] == default
    assert sources["seed"] == sources["device"] == BUILT_IN
    # Every leaf of the config has a source.
    assert set(sources) == set(leaves(config.model_dump(mode="json")))


def test_the_model_layer_applies_after_the_dataset_layer_for_its_model_only() -> None:
    resolved = resolve_unlearn_config(
        "contrastive", "class", dataset="fashion-mnist", model="small_cnn"
    )
    config, sources = resolved.config, resolved.sources
    model_layer = "model layer fashion-mnist/small_cnn/contrastive-class.yaml"
    # small_cnn's convolution blocks frozen at lr 2e-3; the dataset layer's weights stay.
    assert config.options["frozen_modules"] == ["encoder.0", "encoder.1", "encoder.2"]
    assert config.optimizer.lr == 2e-3 and config.optimizer.momentum == 0.9
    assert sources["options.frozen_modules"] == sources["optimizer.lr"] == model_layer
    assert sources["optimizer.momentum"] == "default (contrastive, class)"
    assert sources["options.lambda_ce"] == "dataset layer fashion-mnist/contrastive-class.yaml"
    assert "dataset fashion-mnist, model small_cnn" in resolved.to_yaml_with_sources()
    # Another model, a source-prefixed one, no model, the sample scenario, or no dataset: the
    # layer does not apply (its module names are small_cnn's).
    for dataset, model, scenario in [
        ("fashion-mnist", "resnet18", "class"),
        ("fashion-mnist", "timm:vit_tiny_patch16_224", "class"),
        ("fashion-mnist", "hf:../fashion-mnist/small_cnn", "class"),
        ("fashion-mnist", None, "class"),
        ("fashion-mnist", "small_cnn", "sample"),
        (None, "small_cnn", "class"),
    ]:
        other = resolve_unlearn_config("contrastive", scenario, dataset=dataset, model=model)
        assert other.config.options["frozen_modules"] == [], (dataset, model, scenario)
        assert model_layer not in other.sources.values()


@pytest.mark.parametrize(
    ("method", "scenario", "dataset", "expected"),
    [
        # The papers' numbers, from the methods' defaults.
        ("scrub", "sample", None, {"batch_size": 16, "optimizer.lr": 5e-4, "options.alpha": 0.5}),
        ("bad_teacher", "class", None, {"optimizer.name": "adam", "stopping.max_passes": 1}),
        ("salun", "sample", None, {"optimizer.lr": 1.3e-2, "optimizer.weight_decay": 5e-4}),
        ("unsir", "class", None, {"optimizer.lr": 0.02, "options.noise_repeats": 20}),
        ("fisher", "class", None, {"batch_size": 8, "options.max_samples": 5000}),
        ("ssd", "sample", None, {"batch_size": 128, "options.selection_weighting": 10.0}),
        ("contrastive", "sample", None, {"optimizer.lr": 3e-3, "options.lambda_ce": 4.0}),
        ("lcodec", "sample", None, {"batch_size": 64, "options.hessian_samples": 256}),
        ("original", "class", None, {"batch_size": None}),
        # Dataset layers over them.
        ("scrub", "class", "digits", {"batch_size": 64, "options.epochs": 6, "options.msteps": 2}),
        ("lcodec", "sample", "digits", {"options.perturbations": 200, "options.solver": "minres"}),
        ("fisher", "sample", "fashion-mnist", {"options.alpha": 1e-7, "batch_size": 8}),
        ("neggrad", "class", "fashion-mnist", {"optimizer.lr": 3.33e-06, "batch_size": 64}),
    ],
)
def test_representative_resolved_values(
    method: str, scenario: str, dataset: str | None, expected: dict[str, object]
) -> None:
    resolved = resolve_unlearn_config(method, scenario, dataset=dataset)
    values = leaves(resolved.config.model_dump(mode="json"))
    assert {key: values[key] for key in expected} == expected


def test_user_layers_and_overrides_win_and_say_so() -> None:
    resolved = resolve_unlearn_config(
        "contrastive",
        "class",
        dataset="digits",
        layers=[("--config user.yaml", {"seed": 3, "optimizer": {"lr": 0.02, "momentum": 0.5}})],
        overrides=["optimizer.lr=0.01", "options.omega=2"],
    )
    config, sources = resolved.config, resolved.sources
    assert (config.seed, config.optimizer.momentum) == (3, 0.5)
    assert sources["seed"] == sources["optimizer.momentum"] == "--config user.yaml"
    assert config.optimizer.lr == 0.01 and sources["optimizer.lr"] == "--set optimizer.lr=0.01"
    assert config.options["omega"] == 2 and sources["options.omega"] == "--set options.omega=2"
    assert sources["options.lambda_ce"] == "default (contrastive, class)"


def test_the_authors_preset_is_a_user_layer() -> None:
    """``contrastive-paper-class.yaml`` stays a named alternative, selected with --config."""
    paper = read_yaml(UNLEARN_PRESETS / "contrastive-paper-class.yaml")
    resolved = resolve_unlearn_config(
        "contrastive",
        "class",
        dataset=None,
        layers=[("--config contrastive-paper-class.yaml", paper)],
    )
    config = resolved.config
    assert config.options["detach_retain"] is False and config.options["lambda_ce"] == 1.0
    assert config.stopping.eval_set == "test" and config.stopping.class_checks_forget is False
    assert resolved.sources["options.detach_retain"] == "--config contrastive-paper-class.yaml"


def test_method_defaults_are_complete_and_valid() -> None:
    """Every method on every scenario it supports: its defaults hold every option of its
    Options model and pass validation; without a dataset layer they are the config."""
    for name, method in METHODS.items():
        for scenario in method.scenarios:
            layer = method.defaults(scenario)
            assert layer["method"] == name
            assert set(layer["options"]) == set(method.Options.model_fields)
            assert (
                resolve_unlearn_config(name, scenario, dataset=None).config.options
                == (layer["options"])
            )


def test_every_dataset_layer_names_a_method_scenario_and_valid_keys() -> None:
    layers = sorted(UNLEARN_PRESETS.glob("*/*.yaml"))
    assert layers
    for path in layers:
        method, _, scenario = path.stem.rpartition("-")
        assert method in METHODS and scenario in get_method(method).scenarios, path
        resolved = resolve_unlearn_config(method, scenario, dataset=path.parent.name)
        label = f"dataset layer {path.parent.name}/{path.name}"
        assert label in resolved.sources.values(), path


def test_generic_method_presets_are_gone() -> None:
    """A method's defaults live in code; the only top-level presets are named alternatives."""
    top_level = sorted(path.name for path in UNLEARN_PRESETS.glob("*.yaml"))
    assert top_level == [
        "contrastive-paper-class.yaml",
        "contrastive-paper-sample.yaml",
        "contrastive-release-class.yaml",
        "contrastive-release-sample.yaml",
    ]


@pytest.mark.parametrize(
    ("override", "messages"),
    [
        # An option at the top level or under optimizer: where it belongs, and what is allowed.
        ("temperature=0.5", ["temperature: unknown key", "did you mean options.temperature?"]),
        ("optimizer.omega=2", ["optimizer.omega: unknown key", "did you mean options.omega?"]),
        # An optimizer setting among the options.
        (
            "options.lr=0.1",
            [
                "options.lr: unknown option of method 'contrastive'",
                "did you mean optimizer.lr?",
                "allowed options: temperature, lambda_ul, lambda_ce, omega",
            ],
        ),
        ("options.temprature=0.5", ["options.temprature: unknown option", "allowed options:"]),
        ("lr=0.1", ["lr: unknown key", "did you mean optimizer.lr?", "allowed keys: seed"]),
        ("options.temperature=0", ["temperature", "greater than 0", "allowed options:"]),
        ("optimizer.lr=0", ["optimizer.lr", "greater than 0"]),
    ],
)
def test_keys_at_the_wrong_level_name_the_allowed_ones(override: str, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_unlearn_config("contrastive", "class", dataset=None, overrides=[override])
    for message in messages:
        assert message in str(caught.value)


def test_a_layer_for_another_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="asks for method 'finetune'"):
        resolve_unlearn_config(
            "contrastive",
            "class",
            dataset=None,
            layers=[("--config x.yaml", {"method": "finetune"})],
        )


def test_unknown_method_scenario_and_malformed_override() -> None:
    with pytest.raises(ConfigError, match="registered: .*contrastive"):
        resolve_unlearn_config("magic", "class", dataset=None)
    with pytest.raises(UnsupportedScenarioError, match="class scenario"):
        resolve_unlearn_config("unsir", "sample", dataset=None)
    with pytest.raises(ConfigError, match="allowed: class, sample"):
        resolve_unlearn_config("contrastive", "subclass", dataset=None)
    with pytest.raises(ConfigError, match="key.sub=value"):
        resolve_unlearn_config("contrastive", "class", dataset=None, overrides=["omega"])


def test_yaml_with_sources_loads_back_and_comments_every_value() -> None:
    resolved = resolve_unlearn_config(
        "scrub", "class", dataset="digits", overrides=["optimizer.lr=0.01"]
    )
    text = resolved.to_yaml_with_sources()
    assert yaml.safe_load(text) == resolved.config.model_dump(mode="json")
    lines = text.splitlines()
    assert lines[0] == "# conun unlearn config: method scrub, class scenario, dataset digits"
    assert any(
        line.strip().startswith("lr: 0.01") and line.endswith("# from: --set optimizer.lr=0.01")
        for line in lines
    )
    assert any(
        line.strip().startswith("epochs: 6")
        and line.endswith("# from: dataset layer digits/scrub-class.yaml")
        for line in lines
    )
    # Section lines (optimizer:, stopping:, options:) carry no value; every other line a source.
    values = [line for line in lines[1:] if not line.rstrip().endswith(":")]
    assert len(values) == len(resolved.sources)
    assert all("  # from: " in line for line in values)


def test_yaml_with_sources_of_a_method_without_options() -> None:
    resolved = resolve_unlearn_config("retrain", "sample", dataset=None)
    assert isinstance(resolved, ResolvedConfig)
    text = resolved.to_yaml_with_sources()
    assert "no dataset layer" in text.splitlines()[0]
    assert yaml.safe_load(text) == resolved.config.model_dump(mode="json")
    assert any(line.startswith("options: {}") for line in text.splitlines())
