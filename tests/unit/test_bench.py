"""benchmarks/bench.py's verdict: a row is judged by its median ratio only when the machine's noise (the ratios'
spread over the alternating rounds) is narrower than the median's distance to the target."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([0.99, 1.00, 1.01], "meets"),  # median 1.00, 0.03 above 0.97, spread 0.02
        ([0.90, 0.91, 0.92], "BELOW"),  # median 0.91, 0.06 below, spread 0.02
        ([0.80, 1.00, 1.20], "inconclusive"),  # median 1.00 meets, but the spread 0.40 is wider than 0.03
        ([0.95, 0.96, 1.10], "inconclusive"),  # median 0.96 below by 0.01, spread 0.15
        ([0.97, 0.97, 0.97], "meets"),  # on the target with no spread
    ],
)
def test_verdict(bench, ratios, expected):
    assert bench.verdict(ratios, 0.97) == expected
