"""Display-width padding for CLI tables with Chinese text."""

from tokenyard.textwidth import display_width, ljust


def test_wide_characters_count_two_cells_and_combining_marks_none() -> None:
    assert display_width("abc") == 3
    assert display_width("研发") == 4
    assert display_width("ＡＢ") == 4  # fullwidth forms
    assert display_width("e\u0301") == 1


def test_ljust_lines_up_chinese_and_latin_columns() -> None:
    rows = [ljust(name, 10) + "|" for name in ("acme", "研发部", "混合mix")]
    assert {display_width(row) for row in rows} == {11}
    assert ljust("很长的租户名字超过宽度", 4) == "很长的租户名字超过宽度"
