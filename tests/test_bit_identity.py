"""``benchmarks/bit_identity.py``, the check behind "bit-identical before and after" (issue 26)."""

import json

import pytest

from benchmarks import bit_identity


@pytest.mark.slow  # 2 x 9 tiny runs
def test_the_same_code_gives_the_same_file_and_the_file_tells_runs_apart(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        assert bit_identity.main([str(out), "--methods", "pdmp,vanilla"]) == 0
    assert a.read_bytes() == b.read_bytes()
    runs = {r["run"]: r for r in json.loads(a.read_text())}
    assert {"pdmp-concat", "vanilla-concat", "pdmp-film", "pdmp-se", "resume-pdmp"} <= set(runs)
    assert [len(r["metrics"]) for r in runs.values()] == [3] * len(runs)
    assert all("epoch_seconds" not in m for r in runs.values() for m in r["metrics"])
    assert runs["pdmp-concat"]["weights"] != runs["vanilla-concat"]["weights"]
    # cut after epoch 2 and resumed: the same numbers and weights as the uninterrupted run
    assert runs["resume-pdmp"]["metrics"] == runs["pdmp-concat"]["metrics"]
    assert runs["resume-pdmp"]["weights"] == runs["pdmp-concat"]["weights"]
