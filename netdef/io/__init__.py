"""Binary I/O in Caffe's formats: weights, solver snapshots, mean files, Datum records.

Everything here is driven by netdef's own schema (:mod:`netdef.io.wire`), not by a
protoc-generated ``caffe_pb2``; every write is atomic (:mod:`netdef.io.atomic`).
"""
from netdef.io.atomic import atomic_open, atomic_path, atomic_write
from netdef.io.blobs import (array_to_blob, blob_shape, blob_to_array, datum_to_array,
                             decode_datum, encode_datum, read_blobproto, shape_equals,
                             shape_string, write_blobproto)
from netdef.io.caffemodel import (Weights, check_param_shape, fit_weights, make_solverstate,
                                  net_to_proto, read_caffemodel, read_solverstate, read_weights,
                                  solverstate_history, write_caffemodel, write_hdf5_weights,
                                  write_solverstate)
from netdef.io.wire import WireError, WireField, decode, encode, encode_chunks

__all__ = [
    "atomic_open", "atomic_path", "atomic_write",
    "array_to_blob", "blob_shape", "blob_to_array", "datum_to_array", "decode_datum",
    "encode_datum", "read_blobproto", "shape_equals", "shape_string", "write_blobproto",
    "Weights", "check_param_shape", "fit_weights", "make_solverstate", "net_to_proto",
    "read_caffemodel", "read_solverstate", "read_weights", "solverstate_history",
    "write_caffemodel", "write_hdf5_weights", "write_solverstate",
    "WireError", "WireField", "decode", "encode", "encode_chunks",
]
