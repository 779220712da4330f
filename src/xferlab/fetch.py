"""`python -m xferlab.fetch`: the study's real inputs, downloaded and verified.

    python -m xferlab.fetch images --root /data/opencell          # the 825 single_grade3 targets
    python -m xferlab.fetch images --root /data/opencell --targets LAMP2,CYP51A1 --max-fovs 4
    python -m xferlab.fetch weights                                # every public checkpoint (`make weights`)
    python -m xferlab.fetch weights DINO_FOV_checkpoint.pth        # one by name
    python -m xferlab.fetch weights --list                         # what is there, what is missing

`images`: OpenCell z-projections from the release's public S3 bucket into the layout
`dataset=opencell_raw dataset.root=<root>` imports (see `xferlab.data.opencell_s3`); resumable,
parallel, with a progress bar, a summary and `FETCHED.jsonl` beside the images.
`weights`: the public checkpoints into the weights folder, each verified (publisher's checksum,
strict loading into its backbone) and recorded in `weights.lock` (see `xferlab.backbones.download`).
Downloads need `HF_HUB_OFFLINE=0` (xferlab is offline by default); this command sets it unless
`--offline` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _targets(value: str):
    if value.startswith("@"):  # a file of names, one a line
        return [line.strip() for line in Path(value[1:]).expanduser().read_text().splitlines() if line.strip()]
    return value if "," not in value else [v for v in value.split(",") if v.strip()]


def images(args: argparse.Namespace) -> int:
    from xferlab.data.opencell_s3 import FetchError, Release, fetch

    release = Release(bucket=args.bucket, prefix=args.prefix, endpoint_url=args.endpoint_url, region=args.region)
    print(f"OpenCell z-projections from {release.url()} -> {args.root} (targets: {args.targets}, "
          f"max FOVs per target: {args.max_fovs or 'all'})", flush=True)
    try:
        summary = fetch(release, args.root, selection=_targets(args.targets), max_fovs=args.max_fovs,
                        workers=args.workers, progress=not args.no_progress)
    except FetchError as err:
        print(f"xferlab.fetch: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    if not summary.failed:
        print(f"next: python -m xferlab.train -m experiment=paper dataset.root={Path(args.root).expanduser()}")
    return 1 if summary.failed else 0


def weights(args: argparse.Namespace) -> int:
    from xferlab.backbones.download import download_checkpoint, source_url, verify_checkpoint
    from xferlab.backbones.locations import (KNOWN_CHECKPOINTS, check_lock, read_lock, record_lock, weights_dir,
                                             where_to_get)
    from xferlab.backbones.weights import file_sha256

    folder = weights_dir()
    names = args.names or list(KNOWN_CHECKPOINTS)
    unknown = [n for n in names if n not in KNOWN_CHECKPOINTS]
    if unknown:
        print(f"xferlab.fetch: unknown checkpoint(s) {unknown}; known: {list(KNOWN_CHECKPOINTS)}", file=sys.stderr)
        return 2
    print(f"weights folder: {folder} (set XFERLAB_WEIGHTS to move it)")
    failures = 0
    for name in names:
        known, path = KNOWN_CHECKPOINTS[name], folder / name
        if args.list:
            state = "present" if path.is_file() else "missing"
            print(f"{state:<8} {name:<46} backbone={known.backbone:<15} {source_url(known) if known.downloadable else known.how}")
            continue
        try:
            if path.is_file():
                digest = file_sha256(path)
                check_lock(path, digest)
                if name not in read_lock(folder):  # placed by hand: verify once, then pin it
                    verify_checkpoint(path, known.backbone)
                    record_lock(folder, name, digest)
                print(f"present  {name:<46} sha256 {digest}")
            elif known.downloadable:
                download_checkpoint(name, folder, progress=not args.no_progress)
                print(f"fetched  {name:<46} sha256 {read_lock(folder)[name]}")
            else:
                print(f"missing  {name:<46} {where_to_get(name)}; put it at {path}")
        except (RuntimeError, ValueError, OSError) as err:  # WeightsError included: named, not a traceback
            print(f"FAILED   {name}: {err}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _common_options(parser: argparse.ArgumentParser, default) -> argparse.ArgumentParser:
    parser.add_argument("--offline", action="store_true", default=default,
                        help="do not set HF_HUB_OFFLINE=0 (downloads stay off)")
    parser.add_argument("--no-progress", action="store_true", default=default, help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    common = _common_options(argparse.ArgumentParser(add_help=False), default=False)
    parser = argparse.ArgumentParser(prog="python -m xferlab.fetch", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:8]), parents=[common])
    # the same options after the command; SUPPRESS: absent there, they keep what was given before it
    after = _common_options(argparse.ArgumentParser(add_help=False), default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    from xferlab.data.opencell_s3 import Release

    img = commands.add_parser("images", help="OpenCell z-projections from S3", parents=[after])
    img.add_argument("--root", required=True, help="folder to hold <GENE>_<ENSG>/ folders (dataset.root)")
    img.add_argument("--targets", default="single_grade3",
                     help="a label rule (single_grade3: the study's 825 targets; multilabel), 'all', a comma-separated "
                          "list of gene names / ENSG ids, or @file with one a line (default: single_grade3)")
    img.add_argument("--max-fovs", type=int, default=None, help="at most this many FOVs per target (default: all)")
    img.add_argument("--workers", type=int, default=8, help="parallel downloads (default: 8)")
    img.add_argument("--bucket", default=Release.bucket)
    img.add_argument("--prefix", default=Release.prefix)
    img.add_argument("--endpoint-url", default=None, help="an S3-compatible server instead of AWS")
    img.add_argument("--region", default=Release.region)
    img.set_defaults(run=images)

    wts = commands.add_parser("weights", help="public checkpoints into the weights folder", parents=[after])
    wts.add_argument("names", nargs="*", help="checkpoint file names (default: all)")
    wts.add_argument("--list", action="store_true", help="only show which are present")
    wts.set_defaults(run=weights)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    before = os.environ.get("HF_HUB_OFFLINE")
    if not args.offline:
        os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        return args.run(args)
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


if __name__ == "__main__":
    sys.exit(main())
