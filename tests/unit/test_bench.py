"""The benchmark's arithmetic (its runs are the lab's: tests/lab/test_1_deploy.py)."""

from lvsha.lab.bench import DRY, FLOOR, NO_OP, Figures, format_figures, ratios


def test_ratios_are_medians_over_the_floor_median():
    figures = [Figures(FLOOR, (4.0, 5.0, 40.0)), Figures(NO_OP, (9.0, 10.0, 11.0)), Figures(DRY, (20.0, 15.0, 10.0))]
    assert ratios(figures) == {NO_OP: 2.0, DRY: 3.0}
    assert figures[0].spread == 36.0
    text = format_figures(figures)
    assert "no-op deploy / floor" in text and "2.00x" in text and "3.00x" in text
