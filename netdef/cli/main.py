"""``netdef`` entry point: a thin argparse front over per-command modules.

Each command lives in its own module, imported only when run, so ``netdef --help``,
``compile``, ``report``, ``draw`` and ``fmt`` start fast and never import torch.
Every :class:`~netdef.errors.NetdefError` becomes one or two lines on stderr and exit
code 2 — bad input never shows a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# command -> (module under netdef.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compile": ("compile_cmd", "parse, upgrade, filter and validate a net; print a summary"),
    "fmt": ("fmt_cmd", "print the canonical (upgraded) text of a net or solver"),
    "report": ("report_cmd", "shapes, params, MACs/FLOPs and memory per layer"),
    "draw": ("draw_cmd", "render the net with Graphviz (svg, png, pdf, dot)"),
    "layers": ("layers_cmd", "list the layer types netdef knows"),
    "test": ("test_cmd", "score a trained net over N batches (Caffe's `caffe test`)"),
    "run": ("run_cmd", "one forward pass on images/.npy arrays; top-5 classes, save blobs"),
    "time": ("time_cmd", "per-layer forward/backward timings (Caffe's `caffe time`)"),
    "train": ("train_cmd", "train from a Caffe solver file (Caffe's `caffe train`)"),
    "export": ("export_cmd", "export to standalone PyTorch, TorchScript, torch.export or ONNX"),
    "convert-imageset": ("data_cmds", "images (or .npz arrays) -> LMDB/LevelDB of Datums, "
                                      "like Caffe's convert_imageset"),
    "compute-image-mean": ("data_cmds", "mean BlobProto of a Datum database, like Caffe's "
                                        "compute_image_mean"),
    "make-digits": ("data_cmds", "write scikit-learn's digits as HDF5 + LMDB + mean "
                                 "(the training fixtures' data)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdef",
        description="Caffe-style declarative network compiler: .net/.prototxt in; "
                    "shapes, reports, drawings, PyTorch modules and training out.")
    parser.add_argument("--version", action="version", version=f"netdef {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        _add_args(name, module, p)
    return parser


def _add_args(name: str, module: str, p: argparse.ArgumentParser) -> None:
    mod = importlib.import_module(f"netdef.cli.{module}")
    adder = getattr(mod, "add_arguments_" + name.replace("-", "_"), None) or mod.add_arguments
    adder(p)


def _version() -> str:
    from netdef import __version__
    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    from netdef.errors import NetdefError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _lazy_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    mod = importlib.import_module(f"netdef.cli.{args._module}")
    runner = getattr(mod, "run_" + args.command.replace("-", "_"), None) or mod.run
    try:
        return int(runner(args) or 0)
    except NetdefError as exc:
        print(exc.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netdef: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `netdef fmt x | head`
        return 0


def _lazy_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only import the chosen command's module to build its arguments (fast start)."""
    cmd = next((a for a in argv if not a.startswith("-")), None)
    if cmd in COMMANDS:
        parser = argparse.ArgumentParser(prog="netdef")
        parser.add_argument("--version", action="version", version=f"netdef {_version()}")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        module, help_text = COMMANDS[cmd]
        p = sub.add_parser(cmd, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        _add_args(cmd, module, p)
        return parser
    return build_parser()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
