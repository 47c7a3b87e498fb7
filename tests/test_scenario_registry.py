"""Scenario loading and the model/dataset registries."""
from __future__ import annotations

import pytest

from costmodel import CostclError, Scenario, methods
from costmodel.models.registry import backbone_params, build_model, head_name
from costmodel.scenario import build, load_toml, parse_input_size, parse_option


def test_parameter_counts_of_the_seed_models():
    assert sum(p.numel() for p in build_model("resnet18-cifar", 10).parameters()) == 11_173_962
    assert backbone_params(build_model("resnet32-cifar", 100)) == 463_504
    assert backbone_params(build_model("resnet18", 100)) == 11_176_512
    assert head_name(build_model("mobilenet_v2", 10)) == "classifier.1"


def test_torchvision_and_user_factories(tiny_factory):
    m = build_model("torchvision:squeezenet1_0", 7)
    assert sum(p.numel() for n, p in m.named_parameters() if "classifier" in n) == 512 * 7 + 7
    m = build_model(f"{tiny_factory}:make", 5)
    assert m[-1].out_features == 5
    with pytest.raises(CostclError, match="raised ValueError: no weights here"):
        build_model(f"{tiny_factory}:broken", 5)
    with pytest.raises(CostclError, match="did you mean resnet18"):
        build_model("resnet19", 10)
    with pytest.raises(CostclError, match="torchvision classification model"):
        build_model("torchvision:resnet1800", 10)


def test_classes_and_shape_come_from_the_dataset_unless_given():
    s = Scenario(dataset="tinyimagenet")
    assert s.input_shape == (3, 64, 64) and s.classes == 200
    s = Scenario(dataset="cifar100", input_size=(1, 28, 28), num_classes=7)
    assert s.input_shape == (1, 28, 28) and s.classes == 7


def test_method_defaults_fill_only_what_was_not_said():
    s = methods.resolve(Scenario(dataset="cifar10"))
    assert (s.batch_size, s.optimizer, s.tasks, s.epochs) == (32, "sgd", 5, 50)
    s = methods.resolve(Scenario(dataset="tinyimagenet", batch_size=8, epochs=3))
    assert (s.batch_size, s.tasks, s.epochs) == (8, 10, 3)


def test_toml_file_then_flags(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('model = "resnet32-cifar"\ndataset = "cifar100"\nbatch_size = 64\n'
                 'input_size = "3,32,32"\n[options]\nfoo = 1\n')
    s = build(load_toml(f), batch_size=16)
    assert (s.model, s.dataset, s.batch_size, s.input_size) == ("resnet32-cifar", "cifar100", 16,
                                                                 (3, 32, 32))
    assert dict(s.options) == {"foo": 1}


@pytest.mark.parametrize("text,msg", [
    ("batch_size = ", "is not valid TOML"),
    ("batchsize = 3", "unknown key in s.toml: 'batchsize'; did you mean batch_size"),
])
def test_bad_toml(tmp_path, text, msg):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(CostclError, match=msg):
        load_toml(f)


def test_parsers():
    assert parse_input_size("3,64,64") == (3, 64, 64)
    assert parse_option("beta=2e-4") == ("beta", 0.0002)
    assert parse_option("lean=true") == ("lean", True)
    assert parse_option("name=foo") == ("name", "foo")
    for bad in ("1,2,3,4,5", "a,b,c", "3,0,4"):
        with pytest.raises(CostclError, match="malformed --input-size"):
            parse_input_size(bad)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(batch_size=0), "batch-size must be a whole number >= 1"),
    (dict(sparsity=1.0), r"sparsity must be in \[0, 1\)"),
    (dict(buffer_size=-1), "buffer-size must be a whole number >= 0"),
    (dict(dataset="cifar11"), "did you mean cifar10"),
    (dict(dtype="fp8"), "unknown dtype 'fp8'"),
])
def test_scenario_validation(kwargs, msg):
    with pytest.raises(CostclError, match=msg):
        Scenario(**kwargs)


def test_unknown_method_option_names_the_valid_ones():
    with pytest.raises(CostclError, match=r"method 'sgd' \(--impl [a-z]+\) takes no option 'beta'"):
        methods.resolve(Scenario(options={"beta": 1}))
