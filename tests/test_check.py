"""Bad data: each broken case is reported with its file and counted; training refuses by
default; skip_bad leaves the bad samples out and says how many."""

from __future__ import annotations

import pytest

from data import miniature as M
from pdmp_cli.data import load_dataset
from pdmp_cli.data.check import check_dataset, load_checked
from pdmp_cli.errors import PdmpError

MANIFEST = """
loader = "files"
classes = ["cat", "dog"]
[splits.train]
list = "train.csv"
[splits.test]
list = "test.csv"
[modalities.audio]
kind = "audio"
path = "audio/{id}.wav"
preprocessing = { sample_rate = 8000, clip_seconds = 0.25, n_fft = 128, hop_length = 64 }
[modalities.visual]
kind = "image"
path = "visual/{id}.png"
preprocessing = { size = 16 }
"""


@pytest.fixture
def ds(tmp_path):
    root = M.make_custom(tmp_path / "mine")
    (root / "m.toml").write_text(MANIFEST)
    return root


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_clean_dataset_is_ok(ds):
    r = check_dataset(ds / "m.toml")
    assert r.ok and r.samples == {"train": 4, "test": 2}
    assert r.summary() == "m: 6 samples (train 4, test 2), no problems"


@pytest.mark.parametrize("breakage, kind, file", [
    (lambda d: (d / "audio" / "clip02.wav").unlink(), "missing file", "audio/clip02.wav"),
    (lambda d: (d / "audio" / "clip02.wav").write_bytes(b"not audio at all" * 20), "unreadable file", "audio/clip02.wav"),
    (lambda d: _truncate(d / "audio" / "clip02.wav"), "truncated file", "audio/clip02.wav"),
    (lambda d: _truncate(d / "visual" / "clip02.png"), "truncated file", "visual/clip02.png"),
    (lambda d: (d / "visual" / "clip02.png").write_text("hello"), "unreadable file", "visual/clip02.png"),
])
def test_each_bad_file_is_named_and_counted(ds, breakage, kind, file):
    breakage(ds)
    r = check_dataset(ds / "m.toml")
    assert not r.ok
    assert r.counts == {kind: 1}
    [p] = r.problems
    assert (p.kind, p.split, p.sample, p.path) == (kind, "train", "clip02", ds / file)
    assert r.bad_samples == {("train", "clip02")}
    assert r.summary() == f"m: 1 problem (1 {kind}) in 6 samples (train 4, test 2); 1 samples affected"


def test_truncated_jpeg_frame_in_a_frame_folder(tmp_path):
    root = M.make_cremad(tmp_path / "c")
    _truncate(root / "Image-01-FPS" / "1004_DFA_HAP_XX" / "00002.jpg")
    (root / "AudioWAV" / "1001_DFA_HAP_XX.wav").unlink()
    r = check_dataset("cremad", root)
    assert r.counts == {"missing file": 1, "truncated file": 1}
    assert {(p.split, p.sample) for p in r.problems} == {("train", "1001_DFA_HAP_XX"), ("test", "1004_DFA_HAP_XX")}
    assert any(p.path == root / "Image-01-FPS" / "1004_DFA_HAP_XX" / "00002.jpg" for p in r.problems)


def test_label_outside_class_list(ds):
    (ds / "train.csv").write_text("id,label\nclip01,cat\nclip02,cow\nclip03,cat\nclip04,dog\nclip09,7\n")
    r = check_dataset(ds / "m.toml")
    assert r.counts == {"unknown label": 2}
    assert [(p.sample, p.line, p.detail) for p in r.problems] == [
        ("clip02", 3, "label 'cow' is not one of the 2 classes"),
        ("clip09", 6, "label '7' is not one of the 2 classes"),
    ]
    with pytest.raises(PdmpError, match="2 list rows are unusable, first: unknown label .* --skip-bad"):
        load_dataset(ds / "m.toml")


def test_empty_split_and_missing_list(ds):
    (ds / "test.csv").write_text("id,label\n")
    (ds / "train.csv").unlink()
    r = check_dataset(ds / "m.toml")
    assert r.counts == {"missing list": 1, "empty split": 1}
    assert [p.path for p in r.problems] == [ds / "train.csv", ds / "test.csv"]
    # skipping samples cannot fix this
    with pytest.raises(PdmpError, match=r"dataset m cannot be used: missing list \[train\]"):
        load_checked(ds / "m.toml", skip_bad=True)


def test_training_refuses_by_default_and_skip_bad_skips(ds):
    (ds / "audio" / "clip02.wav").unlink()
    _truncate(ds / "visual" / "clip05.png")
    with pytest.raises(PdmpError) as e:
        load_checked(ds / "m.toml")
    msg = str(e.value)
    assert msg.startswith("dataset m has 1 missing file, 1 truncated file (2 samples): missing file [train] ")
    assert "clip02.wav" in msg and "--skip-bad" in msg and "\n" not in msg
    bundle, report = load_checked(ds / "m.toml", skip_bad=True)
    assert report.skipped == 2
    assert [s.id for s in bundle.train.samples] == ["clip01", "clip03", "clip04"]
    assert [s.id for s in bundle.test.samples] == ["clip06"]
    assert bundle.train_labels == [0, 0, 1]
    for x, _ in bundle.train:  # nothing left that fails to load
        assert set(x) == {"audio", "visual"}
    # leaving samples out is a different dataset for profiles and caches
    M.write_audio(ds / "audio" / "clip02.wav", 0.25)
    M.write_image(ds / "visual" / "clip05.png", seed=5)
    full, clean = load_checked(ds / "m.toml")
    assert clean.ok and clean.skipped == 0 and full.identity != bundle.identity


def test_skip_bad_when_a_whole_split_is_bad(ds):
    for i in ("clip05", "clip06"):
        (ds / "visual" / f"{i}.png").unlink()
    with pytest.raises(PdmpError, match="the test split is empty after leaving out bad samples"):
        load_checked(ds / "m.toml", skip_bad=True)


def test_loading_an_unchecked_bad_file_names_it(ds):
    (ds / "audio" / "clip03.wav").write_bytes(b"junk" * 50)
    bundle = load_dataset(ds / "m.toml")  # lists are fine, so this builds
    with pytest.raises(PdmpError, match=r"clip03.wav: unreadable .*") as e:
        bundle.train[2]
    assert f"run `pdmp datasets check {ds / 'm.toml'}` to list every bad file" in str(e.value)  # a command that works


def test_quick_check_only_looks_for_files(ds):
    _truncate(ds / "audio" / "clip01.wav")
    (ds / "visual" / "clip04.png").unlink()
    r = check_dataset(ds / "m.toml", deep=False)
    assert r.counts == {"missing file": 1}


def test_synthetic_data_passes(tiny_manifest):
    bundle, report = load_checked(tiny_manifest)
    assert report.ok and report.samples == {"train": 60, "test": 30} and len(bundle.train) == 60


def _visit_noting_pid(*args):
    """check._visit, writing down which process ran it (module level: workers unpickle it by name)."""
    import os

    from pdmp_cli.data import check

    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return check._visit.__wrapped__(*args)


def test_parallel_check_finds_the_same_and_warms_the_cache(tmp_path, monkeypatch):
    import os

    import pdmp_cli.data.check as check
    from pdmp_cli.data.features import FeatureCache

    monkeypatch.setattr(check, "PARALLEL_FROM", 8)  # workers from 8 samples on (64 for real use)
    monkeypatch.setattr(check, "CHUNK", 3)  # 4 chunks: one in this process, three in the workers
    _visit_noting_pid.__wrapped__ = check._visit
    monkeypatch.setattr(check, "_visit", _visit_noting_pid)
    monkeypatch.setenv("PIDS_FILE", str(tmp_path / "pids"))
    root = tmp_path / "many"
    n = 12
    rows = [(f"c{i:03d}", "ab"[i % 2]) for i in range(n)]
    (root / "audio").mkdir(parents=True)
    (root / "train.csv").write_text("id,label\n" + "".join(f"{i},{l}\n" for i, l in rows[:-4]))
    (root / "test.csv").write_text("id,label\n" + "".join(f"{i},{l}\n" for i, l in rows[-4:]))
    for k, (i, _) in enumerate(rows):
        M.write_audio(root / "audio" / f"{i}.wav", 0.05, 8000, 200 + 10 * k)
    (root / "audio" / "c007.wav").unlink()
    _truncate(root / "audio" / "c010.wav")
    (root / "m.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.audio]\nkind = "audio"\npath = "audio/{id}.wav"\n'
        'preprocessing = { sample_rate = 8000, clip_seconds = 0.05, n_fft = 64, hop_length = 32 }\n')
    par = check_dataset(root / "m.toml", workers=2)
    assert [(p.kind, p.split, p.sample) for p in par.problems] == [
        ("missing file", "train", "c007"), ("truncated file", "test", "c010")]
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) == 4 and pids[0] == str(os.getpid()) and set(pids[1:]) - {str(os.getpid())}
    # the workers' decodes are in the shared cache: reading every good file now is all hits
    bundle, _ = load_checked(root / "m.toml", skip_bad=True, workers=0)
    fc = FeatureCache()
    for s in bundle.train.samples + bundle.test.samples:
        fc.load(bundle.train.modalities["audio"], s.paths["audio"])
    assert (fc.hits, fc.misses) == (n - 2, 0)


def test_analysis_refuses_a_broken_dataset_and_writes_nothing(ds, tmp_path):
    from pdmp_cli.analysis import run, training_steps
    from pdmp_cli.specs import AnalyzeSpec, resolve_spec

    (ds / "audio" / "clip02.wav").unlink()
    out = tmp_path / "p.json"
    spec = resolve_spec(AnalyzeSpec, {"dataset": str(ds / "m.toml"), "encoder": "small", "epochs": 1,
                                      "early_epochs": 1, "subset": 1.0, "out": str(out), "device": "cpu"})
    before = training_steps.value
    with pytest.raises(PdmpError, match="1 missing file"):
        run(spec, progress=False)
    assert training_steps.value == before and not out.exists()


# ------------------------------------------------------------- issue 14: nothing silent in the lists


def test_path_without_a_per_sample_field_is_refused(ds):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app
    from pdmp_cli.data import load_manifest

    (ds / "m.toml").write_text(MANIFEST.replace('path = "audio/{id}.wav"', 'path = "audio/clip01.wav"'))
    with pytest.raises(PdmpError, match=r"modalities.audio: path 'audio/clip01.wav' names no per-sample field, "
                                        r"so every sample would read the same file; put \{id\} in it"):
        load_manifest(ds / "m.toml")
    res = CliRunner().invoke(app, ["datasets", "check", str(ds / "m.toml")])
    assert res.exit_code == 2 and "names no per-sample field" in res.output and "Traceback" not in res.output
    # a field that is not per-sample ({label}): two samples, one file
    (ds / "m.toml").write_text(MANIFEST.replace('path = "audio/{id}.wav"', 'path = "audio/{label}.wav"'))
    with pytest.raises(PdmpError, match=r"gives samples clip01 and clip03 \(train\) the same file .*audio/cat.wav"):
        load_dataset(ds / "m.toml")


def test_duplicate_ids_and_leakage_are_reported_and_refused(ds):
    (ds / "train.csv").write_text("id,label\nclip01,cat\nclip02,dog\nclip03,cat\nclip04,dog\nclip02,cat\nclip05,cat\n")
    r = check_dataset(ds / "m.toml")
    assert r.counts == {"duplicate id": 1, "leakage": 1}
    dup, leak = r.problems
    assert (dup.split, dup.sample, dup.line) == ("train", "clip02", 6)
    assert dup.detail == "id clip02 is listed 2 times (lines 3, 6) with labels cat, dog"
    assert (leak.split, leak.sample, leak.line, leak.detail) == ("train", "clip05", 7, "id clip05 is also in the test split")
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    res = CliRunner().invoke(app, ["datasets", "check", str(ds / "m.toml")], env={"COLUMNS": "250"})
    assert res.exit_code == 1 and "2 problems (1 duplicate id, 1 leakage)" in res.output
    assert "leakage [train] " + str(ds / "train.csv") + ":7 (sample clip05): id clip05 is also in the test split" in res.output
    with pytest.raises(PdmpError, match=r"1 duplicate id, 1 leakage .*--skip-bad"):
        load_checked(ds / "m.toml")
    with pytest.raises(PdmpError, match="list rows are unusable, first: duplicate id"):
        load_dataset(ds / "m.toml")
    bundle, report = load_checked(ds / "m.toml", skip_bad=True)  # both copies of clip02, the train clip05
    assert [s.id for s in bundle.train.samples] == ["clip01", "clip03", "clip04"] and report.skipped == 2
    assert [s.id for s in bundle.test.samples] == ["clip05", "clip06"]


def test_lists_must_be_utf8_and_may_carry_a_bom(ds):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    (ds / "train.csv").write_bytes("\ufeffid,label\r\nclip01,cat\r\nclip02,dog\r\nclip03,cat\r\nclip04,dog\r\n".encode())
    assert check_dataset(ds / "m.toml").ok  # Excel's "CSV UTF-8"
    (ds / "train.csv").write_bytes("id,label\nclip01,cat\nclip02,dög\n".encode("latin-1"))
    res = CliRunner().invoke(app, ["datasets", "check", str(ds / "m.toml")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert "train.csv is not UTF-8 text (byte 0xf6 on line 3); save it as UTF-8" in res.output.replace("\n", "")
