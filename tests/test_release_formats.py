"""The paper's datasets as their releases (and the codebases the paper compares with) ship
them, in miniature, through the shipped manifests: list quirks (headers, CRLF, separators,
duplicate annotations, a zero-length segment, unpadded clip names), other layouts, and the
validation splits (disjoint from train and test)."""

from __future__ import annotations

import pytest

from typer.testing import CliRunner

from data import miniature as M
from pdmp_cli.cli.app import app
from pdmp_cli.data import load_dataset, load_manifest
from pdmp_cli.data.check import check_dataset
from pdmp_cli.data.manifest import manifest_dir


def _ids(split) -> list[str]:
    return [s.id for s in split.samples]


def _variant(tmp_path, name: str, old: str, new: str):
    """The shipped manifest with one change (load it with data_root=...)."""
    text = (manifest_dir() / f"{name}.toml").read_text()
    assert old in text
    path = tmp_path / f"{name}-variant.toml"
    path.write_text(text.replace(old, new))
    return path


def test_ave_duplicates_rule_zero_length_segment_and_val_split(tmp_path):
    root = M.make_ave(tmp_path / "AVE")
    bundle = load_dataset("ave", data_root=root)
    assert _ids(bundle.train) == M.AVE_KEPT_TRAIN and bundle.train_labels == [0, 2, 1]
    assert _ids(bundle.val) == ["eee555", "fff666"] and bundle.val_labels == [2, 1]
    assert _ids(bundle.test) == ["ccc333", "ddd444"]
    r = check_dataset("ave", root, deep=False)
    assert r.ok and r.samples == {"train": 3, "val": 2, "test": 2}
    assert [(p.split, p.sample, p.line, p.detail) for p in r.dropped] == [
        ("train", "VWi2ENBuTbw", 5, "zero-length segment 0-0"),
        ("train", "RUhOCu3LNXM", 4, "duplicate: id RUhOCu3LNXM is listed 2 times (lines 1, 4) with labels Bark, "
                                    "Church bell (duplicates = 'first')"),
        ("train", "ccc333", 6, "also in the test split, kept there (duplicates = 'first')"),
        ("train", "eee555", 7, "also in the val split, kept there (duplicates = 'first')"),
    ]
    assert r.summary().endswith("no problems; 4 list rows left out by the manifest's rules (train 4)")
    res = CliRunner().invoke(app, ["datasets", "check", "ave", "--data-root", str(root), "--quick", "--show", "3"],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert f"dropped [train] {root / 'trainSet.txt'}:5 (sample VWi2ENBuTbw): zero-length segment 0-0" in res.output
    assert "... and 1 more rows left out (--show N lists more)" in res.output
    # the other rules
    last = _variant(tmp_path, "ave", 'duplicates = "first"', 'duplicates = "last"')
    b = load_dataset(last, data_root=root)  # RUhOCu3LNXM's second row (Bark) kept, at its place
    assert (_ids(b.train), b.train_labels) == (["aaa111", "bbb222", "RUhOCu3LNXM"], [2, 1, 2])
    drop = _variant(tmp_path, "ave", 'duplicates = "first"', 'duplicates = "drop"')
    assert _ids(load_dataset(drop, data_root=root).train) == ["aaa111", "bbb222"]
    refuse = _variant(tmp_path, "ave", 'duplicates = "first"', 'duplicates = "refuse"')
    assert check_dataset(refuse, root, deep=False).counts == {"duplicate id": 1, "leakage": 2}


def test_cefa_protocol_lists_frames_dev_and_test_labels(tmp_path):
    root = M.make_cefa(tmp_path / "CeFA")
    bundle = load_dataset("cefa", data_root=root)
    # train: one sample per listed frame; dev/test: one per frame of each listed video
    assert len(bundle.train) == 4 and len(bundle.val) == 5 and len(bundle.test) == 3
    assert bundle.val_labels == [1, 1, 1, 0, 0] and bundle.test.labels == [0, 0, 1]
    s = bundle.val.samples[0]
    assert s.id == "phase1/dev/003000/profile/0001.jpg"
    assert s.paths["ir"] == root / "phase1" / "dev" / "003000" / "ir" / "0001.jpg"
    assert bundle.test.samples[0].paths["depth"] == root / "phase2" / "test" / "000001" / "depth" / "0001.jpg"
    # without the labels file the unlabelled test list says what is missing
    (root / "phase2" / "4@1_test_ref.txt").unlink()
    r = check_dataset("cefa", root, deep=False)
    assert r.counts == {"missing list": 1, "bad row": 2}  # and training refuses a missing list
    assert "'test/000001' has no label (the release's *_res.txt lists are unlabelled)" in r.first(4)


def test_kinetics_sounds_lists_of_ogm_ge_and_balancebenchmark(tmp_path):
    m = load_manifest("ks")
    assert len(m.classes) == 31 and m.classes[-1] == "30"
    for bb in (False, True):
        bundle = load_dataset("ks", data_root=M.make_ks(tmp_path / f"ks{bb}", balancebenchmark=bb))
        assert _ids(bundle.train) == [c for c, _ in M.KS_TRAIN] and bundle.train_labels == [4, 2, 22]
        assert _ids(bundle.test) == ["-3Mwkq-7TV4_2", "0HQsAGUnQ_0_6"]  # unpadded, used as given
        assert bundle.test.labels == [23, 4]


def test_kinetics_csv_with_plain_clip_names_and_a_split_column(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    rows = [("playing drums", "abc", 10, 20, "train"), ("playing bagpipes", "def", 0, 10, "train"),
            ("playing drums", "ghi", 5, 15, "val"), ("playing bagpipes", "jkl", 7, 17, "test")]
    (root / "ks.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                 + "".join(f"{lab},{yt},{s},{e},{sp}\n" for lab, yt, s, e, sp in rows))
    for i, (_, yt, s, _, _) in enumerate(rows):
        M.write_audio(root / "audio" / f"{yt}_{s}.wav", 0.3, seed=i)
        M.write_frames(root / "frames" / f"{yt}_{s}", 3)
    text = (manifest_dir() / "ks.toml").read_text()
    text = text[:text.index("classes = [")] + text[text.index("[splits.train]"):text.index("[splits.test]")]
    text = text.replace('list = "my_train.txt"\nformat = "kslist"', 'list = "ks.csv"\nformat = "kinetics"\nselect = "train"')
    text += ('[splits.val]\nlist = "ks.csv"\nformat = "kinetics"\nselect = "val"\n'
             '[splits.test]\nlist = "ks.csv"\nformat = "kinetics"\nselect = "test"\n'
             + (manifest_dir() / "ks.toml").read_text().split('format = "kslist"\n')[-1])
    (root / "ks.toml").write_text(text)
    bundle = load_dataset(root / "ks.toml", data_root=root)
    assert bundle.class_names == ["playing bagpipes", "playing drums"]
    assert (_ids(bundle.train), _ids(bundle.val), _ids(bundle.test)) == (["abc_10", "def_0"], ["ghi_5"], ["jkl_7"])


def test_cremad_lists_of_dr_header_crlf_and_its_val_split(tmp_path):
    root = M.make_cremad(tmp_path / "CREMA-D", header=True)  # D&R's train.csv/test.csv
    bundle = load_dataset("cremad", data_root=root)
    assert bundle.train_labels == [5, 1, 0, 5] and len(bundle.test) == 2 and bundle.val is None
    # D&R's carved validation split: my_train.csv + val.csv (no header) = train.csv
    (root / "my_train.csv").write_text("".join(f"{c},{e}\n" for c, e in M.CREMAD_TRAIN[:3]))
    (root / "val.csv").write_text("".join(f"{c},{e}\n" for c, e in M.CREMAD_TRAIN[3:]))
    dr = _variant(tmp_path, "cremad", 'list = "train.csv"\nformat = "cremad"\n',
                  'list = "my_train.csv"\nformat = "cremad"\n\n[splits.val]\nlist = "val.csv"\nformat = "cremad"\n')
    bundle = load_dataset(dr, data_root=root)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 1, 2)
    assert bundle.val_labels == [5] and _ids(bundle.val) == ["1003_TIE_ANG_XX"]


@pytest.mark.parametrize("padded", [True, False])
def test_vggsound_clip_names_padded_or_not(tmp_path, padded):
    bundle = load_dataset("vggsound", data_root=M.make_vggsound(tmp_path / "v", padded=padded))
    assert _ids(bundle.train)[0] == ("---g-f_I2yQ_000001" if padded else "---g-f_I2yQ_1")
    x, _ = bundle.test[1]
    assert tuple(x["visual"].shape) == (3, 3, 224, 224)


def test_ucf101_two_stream_u_v_flow_trees(tmp_path):
    root = M.make_ucf101(tmp_path / "UCF101", uv=True)
    uv = _variant(tmp_path, "ucf101",
                  'path = "rawframes/{label}/{id}"\npreprocessing = { frames = 3, stack = 5, size = 224, '
                  'x_pattern = "flow_x_*.jpg", y_pattern = "flow_y_*.jpg" }',
                  'path = "tvl1_flow/{axis}/{id}"\npreprocessing = { frames = 3, stack = 5, size = 224, '
                  'x_pattern = "*.jpg", y_pattern = "*.jpg" }')
    bundle = load_dataset(uv, data_root=root)
    x, _ = bundle.test[0]
    assert tuple(x["flow"].shape) == (10, 3, 224, 224)
    # u frames (x motion) are 101.., v frames 151..: channel 0 is x, channel 1 is y
    assert float(x["flow"][0].mean()) < float(x["flow"][1].mean())
    (root / "tvl1_flow" / "v" / "v_Archery_g01_c03" / "frame000006.jpg").unlink()
    assert load_dataset(uv, data_root=root).identity != bundle.identity  # the flow trees' frames count
    r = check_dataset(uv, root, deep=False)
    assert r.counts == {"truncated file": 1} and "6 x-flow frames but 5 y-flow frames" in r.first()
