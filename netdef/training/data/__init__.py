"""Caffe's data layers as Python data sources, and Caffe's data tools without OpenCV.

``make_source(layer, phase, base_dir, rank=, world=, seed=)`` opens the source of one
data layer (``Data`` LMDB/LevelDB, ``HDF5Data``, ``ImageData``, ``MemoryData``,
``DummyData``, ``Input``); ``source.next_batch()`` gives ``{top: float32 array}`` shaped
like Caffe's tops, ``source.top_shapes()`` their shapes.  ``Prefetcher(source)`` decodes
ahead in a thread.  ``transform_param`` is applied exactly in Caffe's order and float32
arithmetic (:mod:`.transform`).  Tools: :func:`convert_imageset`, :func:`convert_arrays`,
:func:`compute_image_mean`, :func:`make_digits`.
"""
from __future__ import annotations

from netdef.training.data.base import DataSource, resolve_path
from netdef.training.data.convert import ConvertOptions, convert_arrays, convert_imageset
from netdef.training.data.digits import make_digits
from netdef.training.data.dummy_source import DummyDataSource, InputSource
from netdef.training.data.factory import SOURCES, is_data_layer, make_source
from netdef.training.data.hdf5_source import HDF5DataSource
from netdef.training.data.image_source import ImageDataSource
from netdef.training.data.lmdb_source import DBDataSource
from netdef.training.data.mean import compute_image_mean
from netdef.training.data.memory_source import MemoryDataSource
from netdef.training.data.prefetch import Prefetcher
from netdef.training.data.transform import Transformer

__all__ = [
    "DataSource", "make_source", "is_data_layer", "SOURCES", "Prefetcher", "Transformer",
    "DBDataSource", "HDF5DataSource", "ImageDataSource", "MemoryDataSource",
    "DummyDataSource", "InputSource", "resolve_path",
    "ConvertOptions", "convert_imageset", "convert_arrays", "compute_image_mean", "make_digits",
]
