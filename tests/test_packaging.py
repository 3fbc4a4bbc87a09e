"""A non-editable install carries the shipped models: dtbt_tf.shipped_model finds them from any folder."""
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_finds_shipped_models_from_any_folder(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(REPO)], check=True, capture_output=True, timeout=600)
    code = ("import dtbt_tf, os; from dtbt_tf.models.hnet import load_hnet; "
            "print(dtbt_tf.__file__); print(dtbt_tf.shipped_model('doanet_foa')); print(load_hnet(2).name)")
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out[0].startswith(str(target))  # the installed copy, not the source tree
    assert out[1].startswith(str(target)) and os.path.isfile(os.path.join(out[1], "1", "saved_model.pb"))
    assert out[2] == "hnet_n2_association"
    shipped = {p.relative_to(REPO / "dtbt_tf") for p in (REPO / "dtbt_tf" / "saved_models").rglob("*") if p.is_file()}
    installed = {p.relative_to(target / "dtbt_tf") for p in (target / "dtbt_tf" / "saved_models").rglob("*")
                 if p.is_file()}
    assert shipped == installed


def test_shipped_model_names_and_error():
    import dtbt_tf
    from dtbt_tf.artifacts import SHIPPED_MODELS
    from dtbt_tf.config import ConfigError

    for name in SHIPPED_MODELS:
        assert os.path.isdir(dtbt_tf.shipped_model(name))
    with pytest.raises(ConfigError, match="no shipped model 'nope'"):
        dtbt_tf.shipped_model("nope")
