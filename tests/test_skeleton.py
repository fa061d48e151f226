"""Tests of the shared skeleton: configs, model loading, architecture table, snapshots, CLI errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from xke.cli import main
from xke.config import ConfigError, from_dict, read_yaml
from xke.data.languages import normalize_lang, parse_langs, uses_spaces
from xke.data.schema import EditCase, LangView
from xke.errors import ModelError, XkeError
from xke.methods.base import WeightSnapshot, build_method_config, get_method_class
from xke.methods.weight.common import module_for_layer
from xke.models.architectures import arch_spec, get_module, num_layers
from xke.models.loading import load_model, resolve_model_path
from xke.models.prompts import PromptFormatter


@dataclass
class _Cfg:
    lr: float = 0.1
    layers: list[int] = field(default_factory=lambda: [1])
    name: str = "x"
    flag: bool = False
    steps: int | None = None


def test_config_from_dict_validates_keys_and_types():
    cfg = from_dict(_Cfg, {"lr": 1, "layers": [2, 3], "steps": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.layers == [2, 3]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\]"):
        from_dict(_Cfg, {"lrr": 1}, source="my.yaml")
    with pytest.raises(ConfigError, match="my.yaml: key 'layers'"):
        from_dict(_Cfg, {"layers": "1,2"}, source="my.yaml")
    with pytest.raises(ConfigError, match="key 'flag'"):
        from_dict(_Cfg, {"flag": "yes"})
    with pytest.raises(ConfigError, match="key 'steps'"):
        from_dict(_Cfg, {"steps": 1.5})


def test_read_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(lst)


def test_languages():
    assert normalize_lang("CS") == "cz" and normalize_lang("nl") == "du"
    assert parse_langs("en, zh,en,de") == ["en", "zh", "de"]
    with pytest.raises(XkeError, match="unknown language 'xx'"):
        normalize_lang("xx")
    assert not uses_spaces("zh") and not uses_spaces("th") and uses_spaces("de")


def test_editcase_queries_and_missing_view():
    case = EditCase("c1", {"en": LangView(subject="Paris", prompt="Where is Paris?", target_new="Italy",
                                          paraphrases=["Paris lies in?"], locality_prompt="Who?",
                                          locality_answer="Me")})
    kinds = [q.kind for q in case.queries("en")]
    assert kinds == ["reliability", "generality", "locality"]
    with pytest.raises(XkeError, match="has no 'zh' view"):
        case.view("zh")


def test_model_spec_errors(tmp_path):
    with pytest.raises(ModelError, match="weights must be a local directory.*hub id"):
        resolve_model_path("meta-llama/Llama-2-7b-chat-hf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))


@pytest.mark.parametrize("name,field_name", [("tiny-llama", "mlp.down_proj"), ("tiny-gpt2", "mlp.c_proj"),
                                              ("tiny-gpt-neox", "mlp.dense_4h_to_h"), ("tiny-qwen2", "mlp.down_proj")])
def test_architecture_table_resolves_real_modules(name, field_name):
    lm = load_model(name, device="cpu")
    assert num_layers(lm.model) == 4
    name = module_for_layer(lm.model, "rome", "mlp_out", None, 2)
    assert isinstance(get_module(lm.model, name), torch.nn.Module) and name.endswith(field_name)
    spec = arch_spec(lm.model)
    for attr in ("mlp", "attn_out", "layer"):
        get_module(lm.model, getattr(spec, attr).format(0))
    get_module(lm.model, spec.final_norm)
    with pytest.raises(ModelError, match="out of range"):
        module_for_layer(lm.model, "rome", "mlp_out", None, 9)
    with pytest.raises(ModelError, match="no module named"):
        get_module(lm.model, "model.layers.0.mlp.nope")


def test_unknown_architecture_error(tiny_model):
    class Fake(torch.nn.Module):
        class config:  # noqa: N801
            model_type = "bloomz"
    with pytest.raises(ModelError, match="Add an ArchSpec"):
        arch_spec(Fake())


def test_weight_snapshot_restores_bit_identically(tiny_model):
    model = tiny_model.model
    name = "model.layers.1.mlp.down_proj.weight"
    before = dict(model.named_parameters())[name].detach().clone()
    snap = WeightSnapshot(model, [name])
    with torch.no_grad():
        dict(model.named_parameters())[name].add_(torch.randn_like(before) * 0.1)
    d = snap.deltas()[name]
    assert d.abs().sum() > 0
    snap.restore()
    assert torch.equal(dict(model.named_parameters())[name], before)


def test_formatter_chat_and_plain(tiny_model):
    tok = tiny_model.tokenizer
    chat = PromptFormatter(tok)
    assert chat.use_chat and chat.format("Hi?").endswith("<|assistant|>")
    plain = PromptFormatter(tok, mode="plain")
    assert plain.format("Hi?") == "Q: Hi?\nA:" and plain.format("Paris is in", "cloze") == "Paris is in"


def test_method_registry():
    assert get_method_class("none").kind == "none"
    with pytest.raises(ConfigError, match="unknown method 'foo'"):
        get_method_class("foo")
    assert build_method_config("none") is not None


def test_cli_help_and_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "COMMAND" in capsys.readouterr().out
