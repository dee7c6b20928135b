"""DataTransformer against a literal numpy transcription of Caffe's per-element loop.

The reference draws its random choices from an identically seeded generator in Caffe's
order (mirror, then crop row, then crop column, per item), then fills ``top[top_index] =
(data[data_index] - mean[data_index]) * scale`` element by element.
"""
from __future__ import annotations

import numpy as np
import pytest

from netdef.api import parse_net_text
from netdef.errors import DataError
from netdef.io.blobs import write_blobproto
from netdef.training.data.transform import Transformer

F32 = np.float32


def tparam(text: str):  # noqa: ANN201 - a TransformationParameter
    net = parse_net_text(f'layer {{ name: "d" type: "Data" top: "d" '
                         f'transform_param {{ {text} }} }}')
    return net.layer[0].transform_param


def caffe_reference(img: np.ndarray, *, phase: str, crop: int, mirror: bool, scale: float,
                    mean: np.ndarray | None, mean_values: list[float],
                    rng: np.random.Generator) -> np.ndarray:
    c, h, w = img.shape
    do_mirror = bool(mirror and rng.integers(2))
    height, width, h_off, w_off = h, w, 0, 0
    if crop:
        height = width = crop
        if phase == "TRAIN":
            h_off, w_off = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        else:
            h_off, w_off = (h - crop) // 2, (w - crop) // 2
    flat, out = img.reshape(-1), np.empty(c * height * width, F32)
    mflat = None if mean is None else mean.reshape(-1)
    mv = (mean_values * c if len(mean_values) == 1 else mean_values)
    for ch in range(c):
        for y in range(height):
            for x in range(width):
                di = (ch * h + h_off + y) * w + w_off + x
                ti = (ch * height + y) * width + (width - 1 - x if do_mirror else x)
                e = F32(flat[di])
                if mflat is not None:
                    out[ti] = (e - mflat[di]) * F32(scale)
                elif mv:
                    out[ti] = (e - F32(mv[ch])) * F32(scale)
                else:
                    out[ti] = e * F32(scale)
    return out.reshape(c, height, width)


CASES = [
    ("TRAIN", 'crop_size: 4 mirror: true scale: 0.017 mean_value: 104 mean_value: 117 '
              'mean_value: 123', 4, True, 0.017, [104, 117, 123], False),
    ("TEST", "crop_size: 5 mean_value: 99.5", 5, False, 1.0, [99.5], False),
    ("TEST", "mirror: true scale: 0.5", 0, True, 0.5, [], False),
    ("TRAIN", "crop_size: 3 scale: 0.00390625 mean_file: 'MEAN'", 3, False, 0.00390625, [], True),
    ("TEST", "crop_size: 3 mirror: true mean_file: 'MEAN'", 3, True, 1.0, [], True),
    ("TRAIN", "", 0, False, 1.0, [], False),
]


@pytest.mark.parametrize("phase,text,crop,mirror,scale,mvals,use_mean", CASES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_transform_matches_caffe_loop(tmp_path, phase, text, crop, mirror, scale, mvals,
                                      use_mean, dtype):
    gen = np.random.default_rng(7)
    imgs = (gen.integers(0, 256, (6, 3, 7, 8)) if dtype == np.uint8
            else gen.normal(100, 30, (6, 3, 7, 8))).astype(dtype)
    mean = gen.uniform(0, 255, (1, 3, 7, 8)).astype(F32) if use_mean else None
    if use_mean:
        write_blobproto(tmp_path / "m.binaryproto", mean)
        text = text.replace("'MEAN'", f'"{tmp_path / "m.binaryproto"}"')
    tr = Transformer(tparam(text), phase, None, np.random.default_rng(11))
    ref_rng = np.random.default_rng(11)
    expect = np.stack([caffe_reference(i, phase=phase, crop=crop, mirror=mirror, scale=scale,
                                       mean=mean, mean_values=mvals, rng=ref_rng) for i in imgs])
    got = tr.transform_batch(imgs)
    assert got.dtype == np.float32 and got.shape == expect.shape
    assert got.tobytes() == expect.tobytes()
    single = Transformer(tparam(text), phase, None, np.random.default_rng(11)).transform(imgs[0])
    assert single.tobytes() == expect[0].tobytes()


def test_random_crop_and_mirror_vary_in_train_and_center_crop_in_test():
    img = np.arange(1 * 9 * 9, dtype=np.uint8).reshape(1, 9, 9)
    tr = Transformer(tparam("crop_size: 5 mirror: true"), "TRAIN", None,
                     np.random.default_rng(0))
    outs = {tr.transform(img).tobytes() for _ in range(60)}
    assert len(outs) > 10
    test = Transformer(tparam("crop_size: 5"), "TEST", None, np.random.default_rng(0))
    assert np.array_equal(test.transform(img)[0], img[0, 2:7, 2:7])


def test_transform_errors(tmp_path):
    img = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(DataError, match="crop_size"):
        Transformer(tparam("crop_size: 5"), "TEST", None, np.random.default_rng()).transform(img)
    with pytest.raises(DataError, match="mean_value"):
        Transformer(tparam("mean_value: 1 mean_value: 2"), "TEST", None,
                    np.random.default_rng()).transform(img)
    write_blobproto(tmp_path / "m.bp", np.zeros((1, 3, 5, 5), F32))
    with pytest.raises(DataError, match="mean file"):
        Transformer(tparam(f'mean_file: "{tmp_path / "m.bp"}"'), "TEST", None,
                    np.random.default_rng()).transform(img)
    with pytest.raises(DataError, match="same time"):
        Transformer(tparam(f'mean_file: "{tmp_path / "m.bp"}" mean_value: 3'), "TEST", None,
                    np.random.default_rng())
    with pytest.raises(DataError) as e:
        Transformer(tparam('mean_file: "absent.binaryproto"'), "TEST", tmp_path,
                    np.random.default_rng())
    assert e.value.file == "absent.binaryproto"
