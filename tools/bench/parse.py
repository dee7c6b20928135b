"""Parse time: netdef vs google.protobuf.text_format on the same text.

Cases: GoogLeNet train_val (~2,500 lines) and a 10× concatenation of it (one big
NetParameter with ten copies of every layer).  netdef's time is the whole front half
used by every command (Lark parse + typed IR build); protobuf parses into dynamic
message classes compiled from netdef's own schema (netdef.io.descriptor), so no
caffe.proto is copied.  Medians of 5 after one warm-up.  Goal: ≤ 3× protobuf.
"""
from __future__ import annotations

import sys

from _common import SHARED, timeit, write


def main() -> None:
    from google.protobuf import text_format

    from netdef.api import parse_net_text
    from netdef.io.descriptor import message_class

    path = SHARED / "caffe/models/bvlc_googlenet/train_val.prototxt"
    if not path.exists():
        sys.exit(f"missing {path}")
    one = path.read_text()
    body = "\n".join(l for l in one.splitlines() if not l.startswith("name:"))
    cases = {"googlenet_train_val": one, "googlenet_train_val_x10": 'name: "big"\n' + body * 10}
    NetParameter = message_class("NetParameter")
    results = {}
    for name, text in cases.items():
        nd = timeit(lambda: parse_net_text(text))
        pb = timeit(lambda: text_format.Parse(text, NetParameter()))
        results[name] = {"lines": text.count("\n") + 1, "netdef": nd, "protobuf_text_format": pb,
                         "ratio_netdef_over_protobuf": nd["median_s"] / pb["median_s"]}
    import google.protobuf
    from google.protobuf.internal import api_implementation
    write("parse", {"cases": results, "protobuf": google.protobuf.__version__,
                    "protobuf_backend": api_implementation.Type(), "goal_ratio": 3.0})


if __name__ == "__main__":
    main()
