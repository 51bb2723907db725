"""``smooth-infomax data {info,fetch,synth,labels}``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .alignments import PhoneMap, index_textgrids, load_ctm, load_textgrids, read_phone_names, write_cpc
from .fetch import fetch
from .info import describe, format_description
from .synth import generate


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="inspect, download or generate datasets")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _help(p))

    info = sub.add_parser("info", help="describe a dataset folder (layout, splits, hours, label classes)")
    info.add_argument("path", metavar="PATH", help="dataset folder (or a CSV manifest)")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files with a warning")
    info.set_defaults(func=_cmd_info)

    fetch = sub.add_parser("fetch", help="download, verify and unpack a public dataset")
    fetch.add_argument("name", metavar="NAME", help="artificial-speech or librispeech")
    fetch.add_argument("--to", required=True, metavar="DIR", help="folder to unpack into")
    fetch.add_argument("--from", dest="from_file", metavar="FILE", help="use an archive downloaded by hand")
    fetch.add_argument("--base-url", help="download from this mirror instead")
    fetch.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    fetch.set_defaults(func=_cmd_fetch)

    synth = sub.add_parser("synth", help="generate the synthetic speech dataset (needs the 'synth' extra)")
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--words", type=int, default=None, help="number of words (default: the generator's)")
    synth.add_argument("--voices", type=int, default=None, help="number of voices (default: the generator's)")
    synth.set_defaults(func=_cmd_synth)

    labels = sub.add_parser("labels", help="phone alignments: convert TextGrids or CTM to CPC frame labels")
    lsub = labels.add_subparsers(dest="labels_command", metavar="SUBCOMMAND")
    labels.set_defaults(func=lambda args: _help(labels))
    imp = lsub.add_parser("import", help="write converted_aligned_phones.txt + phones.txt from TextGrids or a CTM")
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("--textgrid", metavar="DIR", help="folder of <utt>.TextGrid files (recursive; MFA output)")
    src.add_argument("--ctm", metavar="FILE", help="CTM file: <utt> <channel> <start> <duration> <phone>")
    imp.add_argument("--out", required=True, metavar="DIR", help="folder to write the two files into")
    imp.add_argument("--tier", default=None, help="TextGrid phone tier name (default: found automatically)")
    imp.add_argument("--phones", metavar="FILE", default=None,
                     help="an existing phones.txt to take the ids from (default: CPC's 41 classes when the labels "
                          "fit them, else the labels found)")
    imp.add_argument("--stress", choices=["strip", "keep"], default="strip",
                     help="ARPAbet stress digits: strip (AH0 -> AH, the default) or keep")
    imp.add_argument("--silence", default="sil",
                     help="name for silence labels (sil, sp, empty), or 'drop' for no label (default: sil)")
    imp.add_argument("--spn", choices=["spn", "sil", "drop"], default="spn",
                     help="spoken noise (spn, <unk>): its own class (default), silence, or no label")
    imp.add_argument("--upper", action="store_true", help="upper-case lower-case ARPAbet labels (ah1 -> AH)")
    imp.set_defaults(func=_cmd_labels_import)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_info(args: argparse.Namespace) -> int:
    d = describe(args.path, skip_bad=args.skip_bad)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def _cmd_labels_import(args: argparse.Namespace) -> int:
    pm = PhoneMap(stress=args.stress, silence=args.silence, spn=args.spn, upper=args.upper)
    inventory = read_phone_names(Path(args.phones)) if args.phones else None
    if args.textgrid is not None:
        folder = Path(args.textgrid)
        if not folder.is_dir():
            raise UserError(f"--textgrid {folder} is not a folder; pass the folder that holds the TextGrid files")
        found = index_textgrids(folder)
        dupes = [stem for stem, paths in found.items() if len(paths) > 1]
        if dupes:
            raise UserError(f"--textgrid {folder}: {len(found[dupes[0]])} TextGrids are named {dupes[0]} "
                            f"(e.g. {found[dupes[0]][0]}); utterance ids must be unique file names")
        if not found:
            raise UserError(f"--textgrid {folder} holds no .TextGrid files")
        labels = load_textgrids({stem: paths[0] for stem, paths in found.items()}, pm, tier=args.tier,
                                inventory=inventory)
    else:
        labels = load_ctm(args.ctm, pm, inventory=inventory)
    phone_path, names_path = write_cpc(args.out, labels)
    frames = sum(labels.count(u) for u in labels.keys())
    print(f"{len(labels)} utterances, {frames} frames of 10 ms, {len(labels.inventory)} phone classes "
          f"-> {phone_path} and {names_path}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    fetch(args.name, args.to, base_url=args.base_url, timeout=args.timeout, from_file=args.from_file,
          keep_archive=args.keep_archive, log=print)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.words is not None:
        kwargs["n_words"] = args.words
    if args.voices is not None:
        kwargs["n_voices"] = args.voices
    result = generate(args.out, **kwargs)
    print(f"synthetic dataset -> {args.out}" if result is None else f"synthetic dataset -> {result}")
    return 0
