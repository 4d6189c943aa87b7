"""Bench presets: the shipped ones validate; bad ones fail early, naming what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conun.bench import (
    BenchPresetError,
    available_presets,
    load_bench_preset,
    parse_seeds,
    plan_bench,
)
from conun.methods import METHODS
from conun.models.registry import build_model


def write_preset(tmp_path: Path, text: str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_presets_validate_and_plan() -> None:
    assert {"smoke", "fashion-mnist", "paper-cifar10", "paper-svhn"} <= set(available_presets())
    for name in available_presets():
        plan = plan_bench(load_bench_preset(name))
        assert plan.name == name and plan.cells


def test_smoke_preset_grid() -> None:
    plan = plan_bench(load_bench_preset("smoke"))
    assert plan.seeds == [0]
    assert plan.train_configs[0].dataset == "digits"
    assert plan.train_configs[0].model == "small_cnn"
    assert plan.methods == {
        "class5": ["original", "retrain", "contrastive", "finetune"],
        "fraction0.05": ["original", "retrain", "contrastive", "finetune"],
    }
    assert len(plan.cells) == 8


# The paper's baselines per request (Lee et al.), shared by every paper-protocol preset.
PAPER_METHODS = {
    "class5": ["original", "retrain", "contrastive", "boundary_shrink", "boundary_expanding",
               "scrub", "unsir"],
    "samples500": ["original", "retrain", "contrastive", "finetune", "neggrad", "fisher",
                   "lcodec"],
}  # fmt: skip


@pytest.mark.parametrize("name, dataset", [("paper-cifar10", "cifar10"), ("paper-svhn", "svhn")])
def test_paper_presets_follow_the_protocol(name: str, dataset: str) -> None:
    plan = plan_bench(load_bench_preset(name))
    config = plan.train_configs[0]
    assert (config.dataset, config.model, config.augment) == (dataset, "resnet18", False)
    assert plan.seeds == [0, 1, 2] and plan.preset.audit
    assert plan.methods == PAPER_METHODS


def test_fashion_mnist_preset_runs_every_method() -> None:
    plan = plan_bench(load_bench_preset("fashion-mnist"))
    assert plan.train_configs[1].epochs == 15 and plan.train_configs[1].seed == 1
    for request, scenario in (("class5", "class"), ("samples500", "sample")):
        expected = {name for name, method in METHODS.items() if scenario in method.scenarios}
        assert set(plan.methods[request]) == expected
        assert plan.methods[request][:2] == ["original", "retrain"]


def test_grid_method_list_is_filtered_per_scenario(tmp_path: Path) -> None:
    path = write_preset(
        tmp_path,
        "dataset: digits\nrequests: [{class: [3, 1]}, {samples: 20, name: twenty}]\n"
        "methods: [lcodec, unsir, retrain]\nseeds: [4, 2]\n",
    )
    plan = plan_bench(load_bench_preset(path), seeds=[7])
    assert plan.name == "custom" and plan.seeds == [7]
    assert plan.methods == {"class1-3": ["retrain", "unsir"], "twenty": ["retrain", "lcodec"]}
    assert plan.train_configs[7].epochs == 40  # the digits train preset applies by default


def test_fingerprint_and_original_key_follow_the_recipe(tmp_path: Path) -> None:
    base = "dataset: digits\nrequests: [{class: [5]}]\nmethods: [contrastive]\nseeds: [0]\n"
    first = plan_bench(load_bench_preset(write_preset(tmp_path, base, "a")))
    same = plan_bench(load_bench_preset(write_preset(tmp_path, base, "b")))
    longer = plan_bench(
        load_bench_preset(write_preset(tmp_path, base + "train: {epochs: 3}\n", "c"))
    )
    (cell,) = first.cells
    assert first.fingerprint(cell) == same.fingerprint(cell)
    assert first.original_key(0) == same.original_key(0)
    assert first.fingerprint(cell) != longer.fingerprint(cell)
    assert first.original_key(0) != longer.original_key(0)
    assert first.original_key(0).startswith("digits-small_cnn-seed0-")


GOOD = "dataset: digits\nrequests: [{class: [5]}]\nseeds: [0]\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            GOOD.replace("digits", "digitz"),
            ["dataset", "unknown dataset 'digitz'", "fashion-mnist"],
        ),
        (GOOD + "model: resnet7\n", ["model", "unknown model 'resnet7'", "small_cnn"]),
        (GOOD + "colour: blue\n", ["colour: unknown key"]),
        (GOOD + "train_preset: nope\n", ["unknown train preset 'nope'", "cifar10"]),
        (GOOD + "methods: [contrastive, magic]\n", ["unknown method(s) magic", "neggrad", "all"]),
        (GOOD + "methods: []\n", ["methods"]),
        (GOOD + "keep_weights: [magic]\n", ["keep_weights", "unknown method(s) ['magic']"]),
        (GOOD.replace("[5]", "[12]"), ["class [12] is not in digits", "0..9"]),
        (GOOD.replace("{class: [5]}", "{class: [5], samples: 3}"), ["exactly one", "class"]),
        (GOOD.replace("{class: [5]}", "{fraction: 1.5}"), ["requests.0.fraction", "less than 1"]),
        (GOOD.replace("{class: [5]}", "{}"), ["exactly one", "got none"]),
        (GOOD.replace("{class: [5]}", "{class: [5]}, {class: [5]}"), ["appear twice", "name"]),
        (GOOD.replace("{class: [5]}", "{class: [5], name: a/b}"), ["request name 'a/b'"]),
        (GOOD.replace("[0]", "[]"), ["seeds", "at least 1"]),
        (GOOD.replace("[0]", "[1, 1]"), ["seeds must be distinct"]),
        (GOOD + "train: {seed: 3}\n", ["train", "seed cannot be set here"]),
        (GOOD + "unlearn: {options: {omega: 2}}\n", ["unlearn", "options cannot be set here"]),
        (
            GOOD + "unlearn_per_method: {magic: {batch_size: 8}}\n",
            ["unlearn_per_method names unknown method(s) magic", "contrastive"],
        ),
        (
            GOOD + "unlearn_per_method: {contrastive: {seed: 3}}\n",
            ["unlearn_per_method", "seed cannot be set here"],
        ),
        (
            GOOD.replace("{class: [5]}", "{class: [5], unlearn_per_method: {magic: {}}}"),
            ["requests.0.unlearn_per_method", "unknown method(s) magic", "contrastive"],
        ),
        (
            GOOD.replace("{class: [5]}", "{class: [5], unlearn_per_method: {neggrad: {seed: 1}}}"),
            ["requests.0.unlearn_per_method", "seed cannot be set here"],
        ),
        (GOOD + "device: tpu\n", ["device", "allowed: cpu, cuda"]),
        (GOOD + "requests: 5\n", ["requests"]),
    ],
)
def test_invalid_presets_name_the_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(BenchPresetError) as caught:
        load_bench_preset(write_preset(tmp_path, text))
    for fragment in expected:
        assert fragment in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD + "train: {epochs: 0}\n", ["train section", "epochs", "greater than or equal to 1"]),
        (
            GOOD + "train: {optimizer: {rate: 1}}\n",
            ["train section", "optimizer.rate: unknown key"],
        ),
        (GOOD + "unlearn: {optimizer: {lr: -1}}\n", ["cell seed 0 / class5", "optimizer.lr"]),
        (
            GOOD.replace("{class: [5]}", "{class: [5], methods: [contrastive, lcodec]}"),
            ["class5 is a class request", "lcodec supports only sample", "unsir"],
        ),
        (GOOD + "methods: [contrastive, lcodec]\n", ["lcodec supports only sample", "class"]),
        (
            GOOD + "methods: [contrastive]\nunlearn_per_method: {contrastive: {options: {w: 1}}}\n",
            ["cell seed 0 / class5 / contrastive", "options.w: unknown option", "omega"],
        ),
        (
            GOOD.replace(
                "{class: [5]}",
                "{class: [5], methods: [contrastive], unlearn_per_method: {finetune: {}}}",
            ),
            ["request class5", "names finetune, which the request does not run", "contrastive"],
        ),
    ],
)
def test_invalid_grids_fail_at_planning(tmp_path: Path, text: str, expected: list[str]) -> None:
    preset = load_bench_preset(write_preset(tmp_path, text))
    with pytest.raises(BenchPresetError) as caught:
        plan_bench(preset)
    for fragment in expected:
        assert fragment in str(caught.value), str(caught.value)


def test_unlearn_per_method_reaches_only_its_method(tmp_path: Path) -> None:
    base = GOOD + "methods: [contrastive, finetune]\nunlearn: {batch_size: 16}\n"
    layered = base + "unlearn_per_method: {contrastive: {batch_size: 8, options: {omega: 2}}}\n"
    plain, per_method = (
        plan_bench(load_bench_preset(write_preset(tmp_path, text, name)))
        for text, name in ((base, "a"), (layered, "b"))
    )
    cells = {cell.method: cell for cell in plain.cells}
    contrastive = per_method.unlearn_configs[cells["contrastive"]]
    assert contrastive.batch_size == 8 and contrastive.options["omega"] == 2  # after `unlearn`
    assert plain.unlearn_configs[cells["contrastive"]].batch_size == 16
    finetune = cells["finetune"]
    assert per_method.unlearn_configs[finetune] == plain.unlearn_configs[finetune]
    # A cell's fingerprint follows its own config only: resumed grids keep the other cells.
    assert per_method.fingerprint(finetune) == plain.fingerprint(finetune)
    assert per_method.fingerprint(cells["contrastive"]) != plain.fingerprint(cells["contrastive"])


def test_a_requests_unlearn_per_method_reaches_only_its_cells(tmp_path: Path) -> None:
    text = (
        "dataset: digits\nseeds: [0]\nmethods: [contrastive, finetune]\n"
        "unlearn_per_method: {contrastive: {batch_size: 8, optimizer: {lr: 0.002}}}\n"
        "requests:\n"
        "  - {class: [5], unlearn_per_method: {contrastive: {optimizer: {name: adamw}}}}\n"
        "  - {samples: 20}\n"
    )
    plan = plan_bench(load_bench_preset(write_preset(tmp_path, text)))
    plain_text = text.replace(", unlearn_per_method: {contrastive: {optimizer: {name: adamw}}}", "")
    plain = plan_bench(load_bench_preset(write_preset(tmp_path, plain_text, "plain")))
    configs = {(cell.request, cell.method): plan.unlearn_configs[cell] for cell in plan.cells}
    # Layered over the preset's section (its batch size and learning rate stay), this request
    # only, this method only.
    layered = configs["class5", "contrastive"]
    assert layered.optimizer.name == "adamw" and layered.optimizer.lr == 0.002
    assert layered.batch_size == 8
    assert configs["samples20", "contrastive"].optimizer.name == "sgd"
    assert configs["class5", "finetune"].optimizer.name == "sgd"
    # Only the cells it changes get another fingerprint: a grid resumes with the others.
    changed = {cell for cell in plan.cells if plan.fingerprint(cell) != plain.fingerprint(cell)}
    assert {(cell.request, cell.method) for cell in changed} == {("class5", "contrastive")}


def test_unknown_preset_lists_the_shipped_ones() -> None:
    with pytest.raises(BenchPresetError, match="unknown bench preset 'nope'.*smoke"):
        load_bench_preset("nope")
    with pytest.raises(BenchPresetError, match="does not exist"):
        load_bench_preset("missing.yaml")


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 3 4, 5 ") == [3, 4, 5]
    for bad in ("", "1,x", "1,1", "-1"):
        with pytest.raises(BenchPresetError, match="distinct integers >= 0"):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "name, model, model_args",
    [
        ("paper-mini-imagenet", "resnet18", {}),
        (
            "paper-mini-imagenet-vit",
            "timm:vit_small_patch16_224",
            {"img_size": 84, "patch_size": 12},
        ),
    ],
)
def test_mini_imagenet_presets_follow_the_protocol_without_the_data(
    name: str,
    model: str,
    model_args: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONUN_DATA", str(tmp_path))  # no mini-imagenet folder anywhere
    plan = plan_bench(load_bench_preset(name))
    assert plan.seeds == [0, 1, 2] and plan.preset.audit
    for seed, config in plan.train_configs.items():
        assert (config.dataset, config.model) == ("mini-imagenet", model)
        assert config.model_args == model_args
        assert (config.image_size, config.augment, config.seed) == (84, False, seed)
    # The paper's requests and baselines, as for CIFAR-10; every cell's config resolved.
    assert plan.methods == PAPER_METHODS
    assert len(plan.cells) == 3 * 14 and set(plan.unlearn_configs) == set(plan.cells)
    assert {config.method for config in plan.unlearn_configs.values()} == set(
        plan.methods["class5"] + plan.methods["samples500"]
    )


def test_mini_imagenet_vit_recipe_builds_a_vit_small_on_84_pixel_images() -> None:
    config = plan_bench(load_bench_preset("paper-mini-imagenet-vit")).train_configs[0]
    vit = build_model(
        config.model, num_classes=100, input_shape=(3, 84, 84), model_args=config.model_args
    )
    output = vit.forward_features(torch.zeros(2, 3, 84, 84))
    assert output.features.shape == (2, 384) and output.logits.shape == (2, 100)  # ViT-small
    timm_vit: Any = vit.model
    assert timm_vit.patch_embed.grid_size == (7, 7)  # 12x12 patches: 49 tokens
    assert len(timm_vit.blocks) == 12


@pytest.mark.parametrize("dataset", ["cifar10", "svhn"])
@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_paper_protocol_presets_per_model_with_the_projection_head(
    dataset: str, depth: int
) -> None:
    plan = plan_bench(load_bench_preset(f"paper-{dataset}-resnet{depth}-proj"))
    config = plan.train_configs[0]
    assert (config.dataset, config.model, config.augment) == (
        dataset,
        f"resnet{depth}_proj",
        False,
    )
    # The authors' released train.py recipe (the paper lists none).
    assert (config.epochs, config.batch_size, config.schedule) == (100, 256, "cosine")
    assert (config.optimizer.lr, config.optimizer.weight_decay) == (0.1, 1e-4)
    assert plan.seeds == [0, 1, 2] and plan.preset.audit
    assert plan.methods == PAPER_METHODS
