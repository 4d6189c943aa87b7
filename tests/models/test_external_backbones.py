"""Library backbones (``timm:``, ``torchvision:``, ``hf:``) behind conun's contract, and ``--init``.

Each source trains a tiny instance on digits through the CLI, unlearns one class with
contrastive unlearning, writes a valid results.json, and its checkpoint loads back. timm and
transformers tests are skipped only when the library is not installed (``make install`` installs
both extras, so CI runs them).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conun.cli import main
from conun.engine.checkpoint import load_checkpoint
from conun.evaluation.results import validate_results
from conun.methods.one_shot import output_layer_names
from conun.models import build_model
from conun.models.external import MissingExtraError, TimmClassifier
from conun.models.heads import final_linear
from conun.models.registry import UnknownModelError, is_model_name
from conun.models.weights import InitWeightsError, load_init_weights

needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="timm is not installed (conun[timm])"
)
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="transformers is not installed (conun[hf])",
)

TINY_VIT = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}
"""A ViT-small reduced to two blocks of width 32, patches of 4x4: 2x2 patches on digits."""


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def model_args(args: dict[str, Any]) -> list[str]:
    return [item for key, value in args.items() for item in ("--set", f"model_args.{key}={value}")]


def save_tiny_hf_vit(directory: Path, num_labels: int = 10) -> None:
    """A tiny transformers ViT for 8x8 grey images, saved locally (nothing downloaded)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(str(directory))


def train_and_unlearn(tmp_path: Path, model: str, extra: list[str], epochs: int) -> Path:
    """Train ``model`` on digits through the CLI, unlearn class 3 with contrastive; checks the
    results and returns the original's directory."""
    original = tmp_path / "original"
    invoke(
        "train",
        "--dataset",
        "digits",
        "--model",
        model,
        "--epochs",
        str(epochs),
        "--out",
        str(original),
        "--quiet",
        "--set",
        "optimizer.name=adamw",
        "--set",
        "optimizer.lr=0.003",
        "--set",
        "optimizer.weight_decay=0.05",
        *extra,
    )
    trained = json.loads((original / "results.json").read_text())
    validate_results(trained)
    assert trained["model"] == model
    forgotten = tmp_path / "class3"
    invoke(
        "unlearn",
        "--checkpoint",
        str(original),
        "--method",
        "contrastive",
        "--forget-class",
        "3",
        "--out",
        str(forgotten),
        "--quiet",
    )
    results = json.loads((forgotten / "results.json").read_text())
    validate_results(results)
    (run,) = results["runs"]
    assert run["method"] == "contrastive" and run["forget"] == {"classes": [3]}
    assert run["metrics"]["forget_train_acc"] <= 0.05
    # Both checkpoints load back into the same architecture and give the same outputs.
    for directory in (original, forgotten):
        model_back, meta = load_checkpoint(directory)
        assert meta.model == model
        again, _ = load_checkpoint(directory)
        x = torch.randn(4, 1, 8, 8)
        with torch.no_grad():
            assert torch.equal(model_back(x), again(x))
    return original


@needs_timm
def test_timm_vit_trains_and_unlearns_a_class_through_the_cli(tmp_path: Path) -> None:
    original = train_and_unlearn(
        tmp_path, "timm:vit_small_patch16_224", model_args(TINY_VIT), epochs=20
    )
    metrics = json.loads((original / "results.json").read_text())["runs"][0]["metrics"]
    assert metrics["test_acc"] >= 0.8  # a transformer that learned digits, not chance
    model, _ = load_checkpoint(original)
    assert isinstance(model, TimmClassifier) and model.feature_dim == 32

    # --init from timm's own state dict layout: training starts from exactly those weights.
    native = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, str(native))
    fresh = build_model(
        "timm:vit_small_patch16_224", num_classes=10, input_shape=(1, 8, 8), model_args=TINY_VIT
    )
    load_init_weights(fresh, native)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # ... and from a conun checkpoint (conun's keys), through the CLI.
    resumed = tmp_path / "from-init"
    invoke(
        "train",
        "--model",
        "timm:vit_small_patch16_224",
        "--init",
        str(original / "checkpoint.safetensors"),
        "--epochs",
        "1",
        "--out",
        str(resumed),
        "--quiet",
        "--set",
        "optimizer.lr=1e-4",
        *model_args(TINY_VIT),
    )
    run = json.loads((resumed / "results.json").read_text())["runs"][0]
    assert run["metrics"]["test_acc"] >= metrics["test_acc"] - 0.05  # started trained
    assert "init: /" in (resumed / "config.yaml").read_text()  # recorded, absolute


def test_torchvision_model_trains_and_unlearns_a_class_through_the_cli(tmp_path: Path) -> None:
    original = train_and_unlearn(tmp_path, "torchvision:shufflenet_v2_x0_5", [], epochs=6)
    model, _ = load_checkpoint(original)
    assert model.head_name == "fc"  # type: ignore[attr-defined]
    native = tmp_path / "torchvision.safetensors"
    save_file(model.module.state_dict(), str(native))  # type: ignore[attr-defined]
    fresh = build_model("torchvision:shufflenet_v2_x0_5", num_classes=10, input_shape=(1, 8, 8))
    load_init_weights(fresh, native)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), model.eval()(x))


@needs_transformers
def test_hugging_face_model_trains_and_unlearns_a_class_through_the_cli(tmp_path: Path) -> None:
    saved = tmp_path / "hf-vit"
    save_tiny_hf_vit(saved)
    original = train_and_unlearn(tmp_path, f"hf:{saved}", [], epochs=15)
    model, _ = load_checkpoint(original)
    # --init from the transformers layout (the model's own state_dict keys).
    native = tmp_path / "hf.safetensors"
    hf = model.module.model  # type: ignore[attr-defined]
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(native))
    fresh = build_model(f"hf:{saved}", num_classes=10, input_shape=(1, 8, 8))
    load_init_weights(fresh, native)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_features_and_logits_follow_the_contract() -> None:
    sources = [("torchvision:resnet18", {}), ("torchvision:mobilenet_v3_small", {})]
    if importlib.util.find_spec("timm") is not None:
        sources += [("timm:resnet18", {}), ("timm:vit_small_patch16_224", TINY_VIT)]
    for name, args in sources:
        model = build_model(name, num_classes=7, input_shape=(3, 16, 16), model_args=args)
        out = model.forward_features(torch.randn(2, 3, 16, 16))
        assert out.features.shape == (2, model.feature_dim), name
        assert out.logits.shape == (2, 7), name
        assert torch.allclose(model.classify(out.features), out.logits), name
        # The output layer that fisher and boundary_expanding use, found on every source.
        layer = final_linear(model, purpose="a test reads it")
        assert layer.out_features == 7, name
        assert {n for n, p in model.named_parameters() if p is layer.weight} <= (
            output_layer_names(model)
        ), name
        assert "head.weight" not in model.state_dict(), name  # no second copy of the head


def test_model_names_and_arguments_are_checked() -> None:
    assert is_model_name("timm:vit_small_patch16_224") and is_model_name("hf:/some/dir")
    assert not is_model_name("timm:") and not is_model_name("keras:resnet")
    with pytest.raises(UnknownModelError, match=r"timm:<name>, torchvision:<name>"):
        build_model("resnet17", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="takes no model_args"):
        build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), model_args={"depth": 2})
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet17'"):
        build_model("torchvision:resnet17", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="names no model"):
        build_model("torchvision:", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="takes RGB images"):
        build_model("torchvision:resnet18", num_classes=10, input_shape=(2, 32, 32))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model("hf:/nonexistent/dir", num_classes=10, input_shape=(3, 32, 32))


@needs_timm
def test_unknown_timm_model_suggests_names() -> None:
    with pytest.raises(ValueError, match="timm has no model 'vit_smal'.*vit_small"):
        build_model("timm:vit_smal", num_classes=10, input_shape=(3, 32, 32))


@pytest.mark.parametrize(("name", "extra"), [("timm:resnet18", "timm"), ("hf:/x", "hf")])
def test_a_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, name: str, extra: str
) -> None:
    real_import = builtins.__import__
    blocked = {"timm": "timm", "hf": "transformers"}[extra]

    def refuse(module: str, *args: Any, **kwargs: Any) -> Any:
        if module.split(".")[0] == blocked:
            raise ImportError(f"No module named {module!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr(importlib, "import_module", lambda module: refuse(module))
    with pytest.raises(MissingExtraError, match=rf"pip install 'conun\[{extra}\]'"):
        build_model(name, num_classes=10, input_shape=(3, 32, 32))


@needs_transformers
def test_hugging_face_image_size_must_match_the_data(tmp_path: Path) -> None:
    save_tiny_hf_vit(tmp_path)
    with pytest.raises(ValueError, match="configured for 8x8 images but the data is 16x16"):
        build_model(f"hf:{tmp_path}", num_classes=10, input_shape=(1, 16, 16))


def test_init_mismatches_list_the_keys(tmp_path: Path) -> None:
    model = build_model("torchvision:resnet18", num_classes=10, input_shape=(3, 16, 16))
    state = {k: v.clone() for k, v in model.module.state_dict().items()}  # type: ignore[attr-defined]
    wide = tmp_path / "wide.safetensors"
    save_file({**state, "conv1.weight": torch.zeros(64, 3, 5, 5)}, str(wide))
    with pytest.raises(InitWeightsError, match=r"shapes differ: module\.conv1\.weight"):
        load_init_weights(model, wide)
    foreign = tmp_path / "foreign.safetensors"
    save_file({**state, "extra.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(InitWeightsError, match=r"does not have: module\.extra\.weight"):
        load_init_weights(model, foreign)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(partial))
    with pytest.raises(InitWeightsError, match=r"missing from the file: module\.layer4"):
        load_init_weights(model, partial)
    # A backbone without its head is fine: the head keeps its fresh initialisation.
    backbone = tmp_path / "backbone.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(backbone))
    load_init_weights(model, backbone)
    not_weights = tmp_path / "bad.safetensors"
    not_weights.write_text("not a safetensors file")
    with pytest.raises(InitWeightsError, match="not a readable safetensors file"):
        load_init_weights(model, not_weights)


README = Path(__file__).resolve().parents[2] / "README.md"


def your_model_examples() -> list[str]:
    """The Python blocks of the README's "Your model" section, in order."""
    text = README.read_text()
    section = text.split("## Your model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@needs_timm
@needs_transformers
def test_readme_your_model_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    timm_example, hf_example = your_model_examples()
    namespace: dict[str, object] = {}
    exec(compile(timm_example, str(README), "exec"), namespace)
    exec(compile(hf_example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    forgotten = float(printed.split("class-3 train accuracy after unlearning:")[1].split()[0])
    assert forgotten <= 0.05
    assert "features: (2, 32)" in printed
