"""Plot labels the fonts here can draw: item names in a script no installed font covers are
drawn as ids, with no "Glyph missing" warning (matplotlib renders them for real)."""

import warnings

import pytest

from eges.evaluation.report import _font_charmaps, _plt, drawable_labels


def render(labels, font, path) -> list[str]:
    plt = _plt()
    from matplotlib.font_manager import FontProperties

    fig, ax = plt.subplots()
    for i, label in enumerate(labels):
        ax.scatter([i], [i], label=label)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ax.legend(prop=FontProperties(fname=font))
        fig.savefig(path)
    plt.close(fig)
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_latin_names_are_kept():
    labels, font = drawable_labels(["Comedy", "Drama"], ["genres #1", "genres #2"])
    assert labels == ["Comedy", "Drama"] and font == _font_charmaps()[0][0]


@pytest.mark.parametrize("names", [["运动鞋", "手机"], ["Comedy", "ドラマ"]])
def test_names_no_font_draws_become_ids_or_get_a_font_that_draws_them(names, tmp_path):
    fallbacks = [f"category #{i}" for i in range(len(names))]
    labels, font = drawable_labels(names, fallbacks)
    covered = any({ord(c) for n in names for c in n} <= charmap for _, charmap in _font_charmaps())
    assert labels == (names if covered else fallbacks)
    assert render(labels, font, tmp_path / "plot.png") == []
    if not covered:  # the check can fail: the names themselves do warn here
        assert render(names, font, tmp_path / "raw.png")
