"""dtbt_tf.config: config serialisation, and the file helpers the benchmarks use to keep README tables current."""
import pytest

from dtbt_tf.config import replace_marked_section


def test_replace_marked_section_rewrites_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:begin -->\nold table\n<!-- t:end -->\nafter\n<!-- u:begin -->\nkeep\n<!-- u:end -->\n")
    assert replace_marked_section(str(readme), "t", "| new |\n")
    assert readme.read_text() == ("intro\n<!-- t:begin -->\n| new |\n<!-- t:end -->\nafter\n"
                                  "<!-- u:begin -->\nkeep\n<!-- u:end -->\n")
    assert not replace_marked_section(str(readme), "missing", "x\n")
    assert list(tmp_path.iterdir()) == [readme]  # no temporary file left behind


def test_saved_loss_config_without_temperature_keeps_the_temperature_it_ran_with():
    """Runs saved before hnet_temperature existed trained at T = 1: resuming them must not switch to the new
    default."""
    from dtbt_tf.config import ConfigError, LossConfig, from_dict, to_dict

    assert LossConfig().hnet_temperature == 5.0
    old = {k: v for k, v in to_dict(LossConfig()).items() if k != "hnet_temperature"}
    assert from_dict(LossConfig, old).hnet_temperature == 1.0
    assert from_dict(LossConfig, to_dict(LossConfig(hnet_temperature=3.0))).hnet_temperature == 3.0
    with pytest.raises(ConfigError, match=r"unknown keys \['bogus'\]"):
        from_dict(LossConfig, {**old, "bogus": 1})


def test_steps_per_epoch_is_optional_and_checked():
    """TrainSettings.steps_per_epoch: None (one pass over the training windows, what runs saved before the field
    existed did) or an integer >= 1."""
    from dtbt_tf.config import ConfigError, TrainSettings, from_dict, to_dict

    assert TrainSettings().steps_per_epoch is None
    old = {k: v for k, v in to_dict(TrainSettings()).items() if k != "steps_per_epoch"}
    assert from_dict(TrainSettings, old).steps_per_epoch is None
    assert from_dict(TrainSettings, to_dict(TrainSettings(steps_per_epoch=7))).steps_per_epoch == 7
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="steps_per_epoch"):
            TrainSettings(steps_per_epoch=bad)
