"""Clear errors for model directories that are not what a command needs."""

from __future__ import annotations

import pytest

from xke.errors import ModelError, XkeError
from xke.models.loading import resolve_model_path


def test_training_output_dir_points_to_its_model(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    (tmp_path / "run" / "pairs").mkdir()
    with pytest.raises(ModelError, match=r"training output directory.*pass --model .*run/model"):
        resolve_model_path(str(tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))


def test_xkde_recipe_on_a_base_model_fails_before_the_data_stage(tmp_path, world):
    from xke.models.families import build_family_model
    from xke.train.recipe import load_train_config, run_recipe

    base = build_family_model("gpt2", tmp_path / "base")  # no chat template
    cfg = load_train_config("toy", None, {})
    with pytest.raises(XkeError, match="has no chat template .*X-KDE recipe"):
        run_recipe(str(base), [f"world:{world}"], tmp_path / "out", cfg, log=lambda *a: None)
    assert not (tmp_path / "out" / "data").exists()
