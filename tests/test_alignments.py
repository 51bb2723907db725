"""TextGrid / CTM alignments -> 10 ms frame labels, partial alignments, ``data labels import``."""

import logging
import shutil

import numpy as np
import pytest
from praatio import textgrid as tgio
from praatio.utilities.constants import Interval

from conftest import write_audio
from smooth_infomax.cli import main
from smooth_infomax.data import open_dataset
from smooth_infomax.data.alignments import (
    CPC41,
    PhoneMap,
    Segment,
    build_inventory,
    find_textgrids,
    load_textgrids,
    read_ctm,
    read_textgrid,
    segments_to_frames,
)
from smooth_infomax.data.folder import FolderDataset
from smooth_infomax.data.info import describe, format_description
from smooth_infomax.data.librispeech import LibriSpeechDataset
from smooth_infomax.errors import DatasetError

# four speakers, three utterances each; 48 or 60 frames of 10 ms
UTTS = {f"{spk}-{ch}-000{k}": (48 + 12 * (k % 2)) * 160 for spk, ch in ((11, 1), (22, 2), (33, 3), (44, 4))
        for k in range(3)}
TRAIN = [u for u in UTTS if not u.endswith("2")]
TEST = [u for u in UTTS if u.endswith("2")]
NAMES = ["sil", "AH", "B", "D", "IY", "K", "S", "T"]


def frame_names(utt: str, n_frames: int) -> list[str]:
    """Runs of 1..6 frames of random phones, silence at both ends (like a forced alignment)."""
    rng = np.random.default_rng(sum(map(int, utt.split("-"))))
    out = ["sil"] * 3
    while len(out) < n_frames - 3:
        out += [NAMES[int(rng.integers(1, len(NAMES)))]] * int(rng.integers(1, 7))
    out = out[: n_frames - 3] + ["sil"] * 3
    return out


def runs(names: list[str]) -> list[tuple[int, int, str]]:
    """(first frame, end frame, name) of every run of equal names."""
    out, start = [], 0
    for f in range(1, len(names) + 1):
        if f == len(names) or names[f] != names[start]:
            out.append((start, f, names[start]))
            start = f
    return out


def write_textgrid(path, names, *, stress=True, extra_words=True, tier_name="phones"):
    """An MFA-like TextGrid of the frame names: silence as empty intervals, stress digits on vowels."""
    entries = []
    for a, b, n in runs(names):
        if n == "sil":
            continue
        label = n + ("1" if stress and n in ("AH", "IY") else "")
        entries.append(Interval(a / 100, b / 100, label))
    xmax = len(names) / 100
    tg = tgio.Textgrid()
    if extra_words:
        tg.addTier(tgio.IntervalTier("words", [Interval(0.03, xmax - 0.03, "hello")], 0, xmax))
    tg.addTier(tgio.IntervalTier(tier_name, entries, 0, xmax))
    path.parent.mkdir(parents=True, exist_ok=True)
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)


def build_corpus(root, *, cpc=True, textgrids=None, speakers=None):
    """LibriSpeech layout; ``textgrids``: None, "beside" or "mfa"; ``speakers``: those that get alignments."""
    for utt, n in UTTS.items():
        spk, ch, _ = utt.split("-")
        write_audio(root / "train-clean-100" / spk / ch / f"{utt}.flac", n, kind="noise", seed=n % 97)
    (root / "train_split.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "test_split.txt").write_text("\n".join(TEST) + "\n")
    (root / "phones.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES)))
    aligned = [u for u in UTTS if speakers is None or u.split("-")[0] in speakers]
    if cpc:
        lines = [" ".join([u, *(str(NAMES.index(n)) for n in frame_names(u, UTTS[u] // 160))]) for u in aligned]
        (root / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    for u in aligned if textgrids else ():
        spk, ch, _ = u.split("-")
        where = root / "train-clean-100" / spk / ch if textgrids == "beside" else root / "alignments" / spk / ch
        write_textgrid(where / f"{u}.TextGrid", frame_names(u, UTTS[u] // 160))
    return root


def all_phones(ds):
    return [ds[i].labels["phones"].numpy() for i in range(len(ds))]


def test_phone_map_default_matches_cpc_41_classes():
    pm = PhoneMap()
    assert len(CPC41) == 41 and len(set(CPC41)) == 41
    assert [pm(x) for x in ("AH0", "ah1", "IY2", "", "sp", "SIL", "spn", "<unk>", "NG", "a")] == \
        ["AH", "ah", "IY", "sil", "sil", "sil", "spn", "spn", "NG", "a"]
    assert PhoneMap(upper=True)("ah1") == "AH" and PhoneMap(upper=True)("a") == "a"
    assert PhoneMap(stress="keep")("AH0") == "AH0"
    assert PhoneMap(spn="sil")("spn") == "sil" and PhoneMap(spn="drop")("spn") is None
    assert PhoneMap(silence="drop")("sp") is None and PhoneMap(silence="SIL")("") == "SIL"
    assert build_inventory(["AH", "sil", "spn", "ZH"]) == list(CPC41)
    assert build_inventory(["a", "sil", "b"]) == ["sil", "a", "b"]  # another phone set: the labels found


def test_frame_takes_the_phone_at_its_middle():
    segs = [Segment(0.0, 0.014, "B"), Segment(0.014, 0.036, "AH0"), Segment(0.05, 0.07, "T")]
    # frame middles 5, 15, 25, 35, 45, 55, 65 ms; 40..50 ms is a gap (silence); frame 7 (75 ms) is past the end
    assert segments_to_frames(segs, 7) == ["B", "AH", "AH", "AH", "sil", "T", "T"]
    assert segments_to_frames(segs, 0) == []


def test_textgrid_cpc_file_and_ctm_give_identical_frame_labels(tmp_path):
    cpc = LibriSpeechDataset(build_corpus(tmp_path / "cpc"), "train")
    beside = LibriSpeechDataset(build_corpus(tmp_path / "beside", cpc=False, textgrids="beside"), "train")
    mfa = LibriSpeechDataset(build_corpus(tmp_path / "mfa", cpc=False, textgrids="mfa"), "train")
    assert isinstance(beside.phone_file.path, str) and "TextGrid" in beside.phone_file.path
    assert cpc.label_names["phones"] == beside.label_names["phones"] == mfa.label_names["phones"] == NAMES
    ref = all_phones(cpc)
    assert len(ref) == len(TRAIN) and all((r >= 0).all() for r in ref)
    for other in (beside, mfa):
        got = all_phones(other)
        assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    # crops get the same windows of labels too
    c1 = LibriSpeechDataset(tmp_path / "cpc", "train", crop=3200, random_crop=True, seed=3)
    c2 = LibriSpeechDataset(tmp_path / "mfa", "train", crop=3200, random_crop=True, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(all_phones(c1), all_phones(c2)))

    # the same alignment as CTM, imported with the CLI, gives the same file back
    ctm = tmp_path / "ali.ctm"
    with open(ctm, "w") as fh:
        for u in UTTS:
            for a, b, n in runs(frame_names(u, UTTS[u] // 160)):
                if n != "sil":
                    fh.write(f"{u} 1 {a / 100:.2f} {(b - a) / 100:.2f} {n}{'0' if n == 'AH' else ''}\n")
    out = tmp_path / "imported"
    assert main(["data", "labels", "import", "--ctm", str(ctm), "--out", str(out),
                 "--phones", str(tmp_path / "cpc" / "phones.txt")]) == 0
    shutil.copytree(tmp_path / "cpc", tmp_path / "via_ctm", ignore=shutil.ignore_patterns("*.txt"))
    for name in ("train_split.txt", "test_split.txt"):
        shutil.copy(tmp_path / "cpc" / name, tmp_path / "via_ctm" / name)
    for name in ("converted_aligned_phones.txt", "phones.txt"):
        shutil.copy(out / name, tmp_path / "via_ctm" / name)
    via_ctm = LibriSpeechDataset(tmp_path / "via_ctm", "train")
    # the CTM stops at the last phone: the trailing silence frames are "no label", the rest is identical
    for a, b in zip(ref, all_phones(via_ctm)):
        assert np.array_equal(a[: len(a) - 3], b[: len(a) - 3]) and (b[len(a) - 3:] == -1).all()


def test_textgrid_import_writes_the_cpc_files(tmp_path, capsys):
    root = build_corpus(tmp_path / "c", cpc=False, textgrids="mfa")
    out = tmp_path / "labels"
    assert main(["data", "labels", "import", "--textgrid", str(root / "alignments"), "--out", str(out)]) == 0
    assert "12 utterances" in capsys.readouterr().out
    names = [line.split()[1] for line in (out / "phones.txt").read_text().splitlines()]
    assert names == list(CPC41)  # every label fits CPC's 41 classes: the default inventory
    lines = dict(line.split(" ", 1) for line in (out / "converted_aligned_phones.txt").read_text().splitlines())
    u = TRAIN[0]
    assert [CPC41[int(i)] for i in lines[u].split()] == frame_names(u, UTTS[u] // 160)


def test_phone_tier_found_by_its_labels(tmp_path):
    names = frame_names("11-1-0000", 48)
    write_textgrid(tmp_path / "a.TextGrid", names, tier_name="tier 2")  # neither tier is called phones
    segs, xmax = read_textgrid(tmp_path / "a.TextGrid")
    assert xmax == pytest.approx(0.48) and segments_to_frames(segs, 48) == names
    with pytest.raises(DatasetError, match="no interval tier 'phones'"):
        read_textgrid(tmp_path / "a.TextGrid", tier="phones")
    (tmp_path / "bad.TextGrid").write_text("this is not a TextGrid\n")
    with pytest.raises(DatasetError, match="bad.TextGrid"):
        read_textgrid(tmp_path / "bad.TextGrid")


def test_ctm_errors_name_the_line(tmp_path):
    p = tmp_path / "x.ctm"
    p.write_text("u1 1 0.00 0.10 AH0\nu1 1 zero 0.1 B\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_ctm(p)


def test_label_outside_phones_txt_is_named(tmp_path):
    root = build_corpus(tmp_path / "c", cpc=False, textgrids="beside")
    (root / "phones.txt").write_text("0 sil\n1 AH\n")
    with pytest.raises(DatasetError, match=r"TextGrid .*\.TextGrid: phone '[A-Z]+' is not in the phone inventory"):
        LibriSpeechDataset(root, "train")


def test_partial_textgrids_one_speaker_of_four(tmp_path, caplog):
    root = build_corpus(tmp_path / "c", cpc=False, textgrids="beside", speakers={"22"})
    with caplog.at_level(logging.WARNING, logger="smooth_infomax.data"):
        train = open_dataset(root, split="train")
    assert len(train) == 8 and train.label_names["phones"] == NAMES
    assert [train.items[i].key for i in train.aligned_indices()] == ["22-2-0000", "22-2-0001"]
    assert sum("cover 2 of 8 utterances of train (25.0%), 1 of 4 utterances of test (25.0%)" in r.getMessage()
               for r in caplog.records) == 1
    text = format_description(describe(root))
    assert "phones: 2 of 8 utterances aligned (25.0%), 8 classes" in text
    assert "phones: 1 of 4 utterances aligned (25.0%)" in text


def test_folder_layout_reads_textgrids_beside_and_under_alignments(tmp_path):
    root = tmp_path / "f"
    for k, u in enumerate(TRAIN[:3]):
        write_audio(root / "spk" / f"{u}.wav", UTTS[u], kind="noise", seed=k)
    write_textgrid(root / "spk" / f"{TRAIN[0]}.TextGrid", frame_names(TRAIN[0], UTTS[TRAIN[0]] // 160))
    write_textgrid(root / "alignments" / "spk" / f"{TRAIN[1]}.TextGrid", frame_names(TRAIN[1], UTTS[TRAIN[1]] // 160))
    ds = FolderDataset(root)
    assert ds.aligned_indices() == [0, 1] and ds.label_names["phones"] == list(CPC41)
    got = ds[0].labels["phones"].numpy()
    assert [CPC41[i] for i in got] == frame_names(TRAIN[0], UTTS[TRAIN[0]] // 160)
    assert (ds[2].labels["phones"].numpy() == -1).all()
    assert ds.summary()["phone_alignments"] == 2
    assert find_textgrids(root, {"x": root / "spk" / "nothing.wav"}) == {}


def test_load_textgrids_stress_keep(tmp_path):
    write_textgrid(tmp_path / "u.TextGrid", ["sil", "AH", "AH", "B", "sil"], extra_words=False)
    labels = load_textgrids({"u": tmp_path / "u.TextGrid"}, PhoneMap(stress="keep"))
    assert labels.inventory == ["sil", "AH1", "B"]
    assert labels.labels("u").tolist() == [0, 1, 1, 2, 0]


def test_folder_manifest_splits_share_one_phone_inventory(tmp_path):
    root = tmp_path / "m"
    write_audio(root / "a.wav", 4800, kind="noise", seed=1)
    write_audio(root / "b.wav", 4800, kind="noise", seed=2)
    (root / "manifest.csv").write_text("path,speaker,split\na.wav,x,train\nb.wav,y,test\n")
    write_textgrid(root / "a.TextGrid", ["sil"] * 5 + ["aa"] * 20 + ["sil"] * 5, extra_words=False)
    write_textgrid(root / "b.TextGrid", ["sil"] * 5 + ["zz"] * 20 + ["sil"] * 5, extra_words=False)
    train, test = FolderDataset(root, split="train"), FolderDataset(root, split="test")
    assert train.label_names["phones"] == test.label_names["phones"] == ["sil", "aa", "zz"]
    assert train[0].labels["phones"].tolist()[5] == 1 and test[0].labels["phones"].tolist()[5] == 2
    assert train.aligned_indices() == [0] and test.aligned_indices() == [0]


def test_textgrid_of_other_audio_is_named(tmp_path):
    root = build_corpus(tmp_path / "c", cpc=False, textgrids="beside")
    u = TRAIN[1]
    spk, ch, _ = u.split("-")
    bad = root / "train-clean-100" / spk / ch / f"{u}.TextGrid"
    write_textgrid(bad, frame_names(u, UTTS[u] // 160) + ["sil"] * 20)  # 0.2 s longer than the audio
    with pytest.raises(DatasetError, match=f"utterance {u} .*{bad.name} but the audio has"):
        LibriSpeechDataset(root, "train")
