"""``convert-imageset``, ``compute-image-mean`` and ``make-digits``: Caffe's data tools.

Thin argparse fronts over :mod:`netdef.training.data` (no OpenCV needed: Pillow decodes).
"""
from __future__ import annotations

import argparse
import sys

from netdef.errors import NetdefError


def add_arguments_convert_imageset(p: argparse.ArgumentParser) -> None:
    p.usage = ("%(prog)s [options] ROOT/ LISTFILE DB\n"
               "       %(prog)s [options] --from-npz FILE.npz DB")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="root folder (prefixed to every listed path as a plain string, so "
                        "end it with '/'), list file of '<path> <label>' lines, output "
                        "database; with --from-npz only DB")
    p.add_argument("--from-npz", metavar="FILE",
                   help="convert the arrays 'data' (N,H,W)/(N,C,H,W) and 'label' of an .npz "
                        "instead of images (keys %%08d)")
    p.add_argument("--resize-height", type=int, default=0, metavar="H")
    p.add_argument("--resize-width", type=int, default=0, metavar="W")
    p.add_argument("--gray", action="store_true", help="read images as 1-channel gray")
    p.add_argument("--shuffle", action="store_true", help="shuffle the order first")
    p.add_argument("--seed", type=int, default=None, help="seed of --shuffle")
    p.add_argument("--encoded", action="store_true",
                   help="store compressed image bytes (encoded: true)")
    p.add_argument("--encode-type", default="", metavar="EXT",
                   help="encoding with --encoded (png, jpg, ...); default: the first "
                        "file's extension")
    p.add_argument("--check-size", action="store_true",
                   help="require every image to have the same data size")
    p.add_argument("--backend", choices=("lmdb", "leveldb"), default="lmdb")


def run_convert_imageset(args: argparse.Namespace) -> int:
    from netdef.training.data.convert import ConvertOptions, convert_arrays, convert_imageset

    opts = ConvertOptions(gray=args.gray, shuffle=args.shuffle, seed=args.seed,
                          resize_height=args.resize_height, resize_width=args.resize_width,
                          encoded=args.encoded, encode_type=args.encode_type,
                          check_size=args.check_size, backend=args.backend)
    if args.from_npz:
        if len(args.paths) != 1:
            raise NetdefError("with --from-npz give only the output DB",
                              hint="netdef convert-imageset --from-npz data.npz out_lmdb")
        convert_arrays(args.from_npz, args.paths[0], opts)
        return 0
    if len(args.paths) != 3:
        raise NetdefError("expected ROOT LISTFILE DB",
                          hint="netdef convert-imageset images/ train.txt train_lmdb")
    root, listfile, db = args.paths
    convert_imageset(root, listfile, db, opts)
    return 0


def add_arguments_compute_image_mean(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", metavar="DB", help="Datum database (LMDB or LevelDB folder)")
    p.add_argument("out", metavar="OUT.binaryproto", nargs="?",
                   help="where to write the mean BlobProto (omit to only print)")
    p.add_argument("--backend", choices=("lmdb", "leveldb"), default=None,
                   help="default: detected from the folder")


def run_compute_image_mean(args: argparse.Namespace) -> int:
    from netdef.training.data.mean import channel_means, compute_image_mean

    mean = compute_image_mean(args.db, args.out, backend=args.backend)
    values = channel_means(mean)
    print(f"Number of channels: {len(values)}", file=sys.stderr)
    for c, v in enumerate(values):
        print(f"mean_value channel [{c}]: {v:g}", file=sys.stderr)
    return 0


def add_arguments_make_digits(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", metavar="OUTDIR",
                   help="folder for digits_{train,test}.h5, {train,test}_h5.txt, "
                        "digits_{train,test}_lmdb and digits_mean.binaryproto")
    p.add_argument("--force", action="store_true", help="replace existing databases")


def run_make_digits(args: argparse.Namespace) -> int:
    from netdef.training.data.digits import make_digits

    for path in make_digits(args.outdir, force=args.force):
        print(path)
    return 0
