"""The one percent formatter every table, summary and note uses."""
import math

from s2i_bench.text import percent


def test_percent_forms():
    assert percent(0.1234) == "12.3%"
    assert percent(0.1234, 2) == "12.34%"
    assert percent(0.05, width=5) == "  5.0%"
    assert percent(0.05, signed=True, suffix="") == "+5.0"
    assert percent(-0.05, signed=True, suffix="") == "-5.0"
    assert percent(None) == "–"
    assert percent(math.nan, missing="-") == "-"
    assert percent(None, width=5, missing="  n/a ") == "  n/a "
    assert percent(1) == "100.0%"
