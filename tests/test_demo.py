"""pdmp demo end to end on the tiny dataset (1 epoch): artifacts, the table, and a second demo
that trains nothing (cached analysis, finished runs reused)."""

from __future__ import annotations

import json

from rich.console import Console
from conftest import png_size

from pdmp_cli import analysis, demo, plots, rundir
from pdmp_cli.profile import Profile

def test_demo_writes_every_artifact_and_a_second_demo_trains_nothing(tmp_path, tiny_manifest):
    out = tmp_path / "demo"
    con = Console(record=True, width=220)
    first = demo.run(out, dataset=str(tiny_manifest), epochs=1, console=con)
    text = con.export_text()

    # the profile, measured once
    assert first.profile_path == out / "profiles" / "tiny.json" and not first.analysis_cached
    prof = Profile.load(first.profile_path)
    assert prof.dataset == "tiny" and len(prof.results["audio"].curve) == 1

    # three complete runs, one per method, concat fusion, γp 10
    summaries = [json.loads((d / rundir.SUMMARY).read_text()) for d in first.run_dirs]
    assert [s["method"] for s in summaries] == ["vanilla", "ogm-ge", "pdmp"]
    assert all(s["status"] == "complete" and s["fusion"] == "concat" and s["epochs_done"] == 1 for s in summaries)
    assert all(d.parent == out / "runs" for d in first.run_dirs)
    assert summaries[2]["gamma_p"] == 10.0

    # the table: printed and in report.md, one row per method with the runs' own numbers
    md = first.report_md.read_text().strip().splitlines()
    head = [c.strip() for c in md[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:] if line.startswith("| tiny")]
    assert [r[head.index("method")] for r in body] == ["vanilla", "ogm-ge", "pdmp"]
    for r, s in zip(body, summaries):
        assert r[head.index("acc % (best val epoch)")].strip("*") == f"{100 * s['selected_accuracy']:.1f}"
        assert r[head.index("final acc %")].strip("*") == f"{100 * s['final_accuracy']:.1f}"
        assert r[head.index("final macro-F1 %")].strip("*") == f"{100 * s['final_macro_f1']:.1f}"
        assert r[head.index("n")] == "1"
    for s in summaries:
        assert f"{100 * s['final_accuracy']:.1f}" in text
    assert "tiny: vanilla vs OGM-GE vs PDMP" in text

    # the plots, valid PNGs; every artifact's path printed
    names = sorted(p.name for p in first.plots)
    assert names == sorted([*(f"run-{d.name}.png" for d in first.run_dirs), "compare-tiny-concat.png", "profile-tiny.png"])
    assert first.comparison_plot == out / "plots" / "compare-tiny-concat.png"
    assert png_size(first.comparison_plot) == plots.RUN_SIZE
    assert png_size(out / "plots" / "profile-tiny.png") == plots.PROFILE_SIZE
    for p in [first.profile_path, *first.run_dirs, first.report_md, *first.plots]:
        assert str(p) in text

    # a second demo: the analysis from the cache (no unimodal step), the runs reused
    steps = analysis.training_steps.value
    con2 = Console(record=True, width=220)
    second = demo.run(out, dataset=str(tiny_manifest), epochs=1, console=con2)
    assert second.analysis_cached and analysis.training_steps.value == steps
    assert [o.action for o in second.sweep.outcomes] == ["skipped"] * 3
    assert second.run_dirs == first.run_dirs
    assert "served from the analysis cache, nothing trained" in con2.export_text()
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(d.name for d in first.run_dirs)


def test_the_demo_trains_the_settings_chosen_on_validation(tmp_path):
    # data_manifests/synthetic.toml: PDMP's gamma_p and OGM-GE's alpha as `pdmp tune` chose them
    from pdmp_cli import sweep
    from pdmp_cli.analysis import manual_profile

    prof = manual_profile("synthetic", "visual", "audio", modalities=["audio", "visual"]).save(tmp_path / "p.json")
    base = sweep.base_spec(str(prof), dataset="synthetic", flags={"runs_root": str(tmp_path / "runs")})
    specs = {s.method: s for s in sweep.grid(base, methods=["vanilla", "ogm-ge", "pdmp"])}
    assert specs["pdmp"].gamma_p == 2.0 and specs["ogm-ge"].method_args["ogm-ge"]["alpha"] == 0.1
    assert (specs["pdmp"].epochs, specs["ogm-ge"].epochs, specs["vanilla"].epochs) == (20, 20, 20)  # one budget
