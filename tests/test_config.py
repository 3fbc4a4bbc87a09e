"""File helpers of dtbt_tf.config that the benchmarks use to keep README tables current."""
from dtbt_tf.config import replace_marked_section


def test_replace_marked_section_rewrites_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:begin -->\nold table\n<!-- t:end -->\nafter\n<!-- u:begin -->\nkeep\n<!-- u:end -->\n")
    assert replace_marked_section(str(readme), "t", "| new |\n")
    assert readme.read_text() == ("intro\n<!-- t:begin -->\n| new |\n<!-- t:end -->\nafter\n"
                                  "<!-- u:begin -->\nkeep\n<!-- u:end -->\n")
    assert not replace_marked_section(str(readme), "missing", "x\n")
    assert list(tmp_path.iterdir()) == [readme]  # no temporary file left behind
