"""List formats: a split's list file, as each dataset's release (or the codebase the paper
compares with) distributes it -> rows ``(line number, {field: value})``.

Every row has ``id`` and ``label``; other fields can be used in a manifest's path patterns.
Files are read as UTF-8 (a byte-order mark, as Excel's "CSV UTF-8" writes, is accepted; any
other encoding is refused in one line); CRLF or LF line ends.

  ``csv``       header row with ``id`` and ``label`` columns (others become fields); labels are
                class names or integer indices
  ``cremad``    CREMA-D ``clip_id,EMOTION`` rows: OGM-GE's ``train.csv``/``test.csv`` (no header)
                and D&R's (``train.csv``/``test.csv`` with a ``name,label`` header and CRLF;
                ``my_train.csv``/``val.csv`` without)
  ``ave``       AVE's ``&``-separated ``Category&VideoID&Quality&StartTime&EndTime`` lines
                (``Annotations.txt``' header line is skipped). A zero-length segment (``&0&0``,
                ``trainSet.txt`` line 64) holds nothing to learn from: it is left out and
                reported (``Index.dropped``), never an error
  ``kinetics``  Kinetics csv, header ``label,youtube_id,time_start,time_end[,split]``;
                ``id`` = ``<youtube_id>_<time_start:06d>_<time_end:06d>`` (Kinetics' clip names),
                ``id_plain`` = ``<youtube_id>_<time_start>`` (OGM-GE's)
  ``kslist``    Kinetics-Sounds as OGM-GE releases it (``<clip>,10,<label>``, no header) or
                BalanceBenchmark's space-separated lists: ``id`` = the first field verbatim
                (padded or not), ``label`` = the last field (an integer class index)
  ``vggsound``  VGGSound's ``vggsound.csv``: ``youtube_id,start_seconds,label,split``, no
                header; ``id`` = ``<youtube_id>_<start:06d>``, ``id_plain`` = ``<youtube_id>_<start>``
                (how OGM-GE's and BalanceBenchmark's scripts name the clips)
  ``ucf101``    ``trainlist01.txt`` / ``testlist01.txt``: ``Class/v_Class_g08_c01.avi [k]``;
                ``id`` = the video's stem, ``label`` = its class folder, ``video`` = the path
  ``cefa``      CASIA-SURF CeFA protocol lists, paths relative to the list's own folder:
                ``train/<video>/profile/0001.jpg <label>`` (``4@X_train.txt``: one frame per
                line) or ``dev/<video> <label>`` (``4@X_dev_ref.txt``: one video per line; every
                frame of ``<video>/profile/`` becomes a sample, as the paper's 35k / 18k / 54k
                image counts imply) or ``test/<video>`` (``4@X_test_res.txt``: unlabelled; the
                labels come from the split's ``labels`` file, ``<video> <label>`` lines). The
                depth and IR frames: ``profile`` replaced by ``depth`` / ``ir``. Fields
                ``rgb``/``depth``/``ir`` (relative to the data root), ``video``. The older
                CASIA-SURF four-column lines ``<rgb> <depth> <ir> <label>`` are read too.

``id_plain``: the split's ``ids`` option picks which name the files on disk use: ``auto``
(default) looks at the first rows' files, ``padded`` or ``plain`` force one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pdmp_cli.data.base import Problem
from pdmp_cli.data.confine import UNSAFE_TAIL, UnsafePath, confine
from pdmp_cli.errors import PdmpError

Row = tuple[int, dict[str, str]]  # (line number, fields)

FORMATS = ("csv", "cremad", "ave", "kinetics", "kslist", "vggsound", "ucf101", "cefa")
SPLIT_COLUMN = {"csv", "kinetics", "vggsound"}  # formats that can carry a split column
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_text(path: Path, what: str = "list file") -> str:
    """A text file as UTF-8 (BOM accepted). Not UTF-8: PdmpError in one line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PdmpError(f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                        "save it as UTF-8 (in Excel: 'CSV UTF-8')", 2) from None


def _csv_rows(text: str, path: Path, problems: list[Problem], split: str, select: str | None) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    if "id" not in cols or "label" not in cols:
        problems.append(Problem("bad row", split, path, line=1, detail=f"needs a header row with id,label columns, got {cols}"))
        return []
    rows = []
    for rec in reader:
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
        if not rec.get("id") or rec.get("label", "") == "":
            problems.append(Problem("bad row", split, path, line=reader.line_num, detail="empty id or label"))
            continue
        if select is not None and rec.get("split") != select:
            continue
        rows.append((reader.line_num, rec))
    return rows


def _kinetics_rows(text: str, path: Path, problems, split, select) -> list[Row]:
    rows = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    need = {"label", "youtube_id", "time_start", "time_end"}
    cols = {c.strip() for c in reader.fieldnames or []}
    if not need <= cols:
        problems.append(Problem("bad row", split, path, line=1, detail=f"needs header columns {sorted(need)}, got {sorted(cols)}"))
        return []
    for rec in reader:
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items() if k}
        try:
            ts, te = int(float(rec["time_start"])), int(float(rec["time_end"]))
        except (TypeError, ValueError):
            problems.append(Problem("bad row", split, path, line=reader.line_num, detail="time_start/time_end are not numbers"))
            continue
        if select is not None and rec.get("split") != select:
            continue
        yt = rec["youtube_id"]
        rec["id"], rec["id_plain"] = f"{yt}_{ts:06d}_{te:06d}", f"{yt}_{ts}"
        rows.append((reader.line_num, rec))
    return rows


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _cefa_rows(lines, path: Path, root: Path, problems, split, labels: dict[str, str] | None) -> list[Row]:
    base = path.parent.relative_to(root) if path.parent.is_relative_to(root) else Path(".")
    rows = []

    def frame(n, rgb: str, label: str, video: str):
        if "/profile/" not in f"/{rgb}":
            problems.append(Problem("bad row", split, path, line=n, detail=f"expected a frame under profile/, got {rgb!r}"))
            return
        rel = (base / rgb).as_posix()
        other = {m: f"/{rel}".replace("/profile/", f"/{m}/")[1:] for m in ("depth", "ir")}
        rows.append((n, {"id": rel, "rgb": rel, **other, "label": label, "video": video}))

    for n, raw in lines:
        cells = raw.split()
        if len(cells) == 4:  # CASIA-SURF 2019: <rgb> <depth> <ir> <label>
            rgb, depth, ir = ((base / c).as_posix() for c in cells[:3])
            rows.append((n, {"id": rgb, "rgb": rgb, "depth": depth, "ir": ir, "label": cells[3], "video": rgb}))
            continue
        if len(cells) not in (1, 2):
            problems.append(Problem("bad row", split, path, line=n, detail=f"expected '<path> <label>', got {raw!r}"))
            continue
        item = cells[0].rstrip("/")
        label = cells[1] if len(cells) == 2 else (labels or {}).get(item)
        if label is None:
            problems.append(Problem("bad row", split, path, line=n, detail=(
                f"{item!r} has no label (the release's *_res.txt lists are unlabelled); give the labels as "
                "'<video> <label>' lines in a file named by this split's labels option")))
            continue
        if item.lower().endswith(IMAGE_SUFFIXES):  # one frame per line (4@X_train.txt)
            frame(n, item, label, (base / Path(item).parent.parent).as_posix())
            continue
        try:  # the list names the folder: it must stay under the data root before it is listed
            folder = confine(root, (base / item / "profile").as_posix())
        except UnsafePath as e:
            problems.append(Problem("bad row", split, path, line=n, detail=(
                f"video {item!r} {e}; {UNSAFE_TAIL}")))
            continue
        frames = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not frames:
            problems.append(Problem("missing file", split, folder, (base / item).as_posix(), "no frames in the video's profile/ folder"))
            continue
        for name in frames:
            frame(n, f"{item}/profile/{name}", label, (base / item).as_posix())
    return rows


def read_labels(path: Path) -> dict[str, str]:
    """``<path> <label>`` lines (a CeFA ``*_ref.txt``) -> {path: label}."""
    out = {}
    for line in read_text(path, "labels file").splitlines():
        cells = line.split()
        if len(cells) >= 2:
            out[cells[0].rstrip("/")] = cells[-1]
    return out


def read_rows(fmt: str, path: Path, root: Path, problems: list[Problem], dropped: list[Problem], split: str,
              select: str | None = None, labels: dict[str, str] | None = None) -> list[Row]:
    """One list file -> rows. Unparseable lines become ``bad row`` problems; rows left out on
    purpose (AVE's zero-length segment) are added to ``dropped``."""
    text = read_text(path)
    if fmt == "csv":
        return _csv_rows(text, path, problems, split, select)
    if fmt == "kinetics":
        return _kinetics_rows(text, path, problems, split, select)
    if fmt in ("cremad", "vggsound"):
        lines = [(n, [c.strip() for c in cells]) for n, cells in enumerate(csv.reader(io.StringIO(text, newline="")), 1)]
        lines = [(n, cells) for n, cells in lines if any(cells)]
    else:
        lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if fmt == "cefa":
        return _cefa_rows(lines, path, root, problems, split, labels)

    rows = []
    for n, raw in lines:
        def bad(msg):
            problems.append(Problem("bad row", split, path, line=n, detail=msg))

        if fmt == "cremad":
            if len(raw) < 2:
                bad(f"expected clip_id,EMOTION, got {','.join(raw)}")
            elif n == 1 and raw[1].lower() == "label":  # D&R's "name,label" header
                continue
            else:
                rows.append((n, {"id": raw[0], "label": raw[1]}))
        elif fmt == "vggsound":
            if len(raw) < 4 or not raw[1].isdigit():
                bad(f"expected youtube_id,start_seconds,label,split, got {','.join(raw)}")
                continue
            if select is not None and raw[3] != select:
                continue
            yt, start = raw[0], int(raw[1])
            rows.append((n, {"id": f"{yt}_{start:06d}", "id_plain": f"{yt}_{start}", "youtube_id": yt,
                             "start_seconds": str(start), "label": raw[2], "split": raw[3]}))
        elif fmt == "ave":
            cells = [c.strip() for c in raw.split("&")]
            if len(cells) != 5:
                bad(f"expected Category&VideoID&Quality&StartTime&EndTime, got {raw!r}")
                continue
            if cells[1] == "VideoID":  # Annotations.txt header
                continue
            row = dict(zip(["label", "id", "quality", "start", "end"], cells))
            start, end = _number(row["start"]), _number(row["end"])
            if start is None or end is None:
                bad(f"StartTime/EndTime are not numbers: {raw!r}")
            elif end <= start:
                dropped.append(Problem("dropped", split, path, row["id"], f"zero-length segment {row['start']}-{row['end']}", n))
            else:
                rows.append((n, row))
        elif fmt == "kslist":
            cells = [c.strip() for c in raw.split(",")] if "," in raw else raw.split()
            if len(cells) < 2 or not cells[0]:
                bad(f"expected '<clip>,10,<label>' or '<clip> ... <label>', got {raw!r}")
                continue
            rows.append((n, {"id": cells[0], "label": cells[-1]}))
        elif fmt == "ucf101":
            cells = raw.split()
            if len(cells) not in (1, 2) or "/" not in cells[0]:
                bad(f"expected 'Class/v_Class_gXX_cXX.avi [k]', got {raw!r}")
                continue
            video = cells[0]
            rows.append((n, {"id": Path(video).stem, "label": video.split("/")[0], "video": video}))
        else:  # pragma: no cover - the manifest model only allows FORMATS
            raise ValueError(fmt)
    return rows


def read_classes_file(path: Path) -> list[str]:
    """``classInd.txt`` (``1 ApplyEyeMakeup``) or one name per line."""
    entries = []
    for n, line in enumerate(read_text(path, "classes file").splitlines()):
        if not line.strip():
            continue
        tok = line.split(maxsplit=1)
        entries.append((int(tok[0]), tok[1].strip()) if len(tok) == 2 and tok[0].isdigit() else (n, line.strip()))
    return [name for _, name in sorted(entries)]
