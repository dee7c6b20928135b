"""netdef.lowering.runtime: devices/dtypes/TF32 helpers and pycaffe-style preprocessing.

The preprocessing reference is pycaffe's ``caffe.io.Transformer.preprocess`` and
``caffe.io.load_image`` written out in numpy (``_pycaffe_preprocess``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from netdef.errors import DataError, NetdefError
from netdef.lowering import runtime as rt


def _pycaffe_preprocess(img_hwc: np.ndarray, *, raw_scale=255.0, swap=(2, 1, 0), mean=None,
                        input_scale=None) -> np.ndarray:
    """Transformer.preprocess for an image already at the blob's H×W (no resize)."""
    caffe_in = img_hwc.astype(np.float32, copy=False)
    caffe_in = caffe_in.transpose((2, 0, 1))
    if swap is not None:
        caffe_in = caffe_in[swap, :, :]
    if raw_scale is not None:
        caffe_in *= raw_scale
    if mean is not None:
        caffe_in -= mean
    if input_scale is not None:
        caffe_in *= input_scale
    return caffe_in


def _png(path, arr: np.ndarray, mode: str | None = None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def _bilinear_half_pixel(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize, half-pixel centres, clamped edges (upscaling reference)."""
    H, W = im.shape[:2]

    def axis(n_out, n_in):
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        i0 = np.floor(x).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, x - i0

    y0, y1, fy = axis(h, H)
    x0, x1, fx = axis(w, W)
    top = im[y0][:, x0] * (1 - fx)[None, :, None] + im[y0][:, x1] * fx[None, :, None]
    bot = im[y1][:, x0] * (1 - fx)[None, :, None] + im[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


# --------------------------------------------------------------------------- loading

def test_load_image_rgb_is_float_0_1(tmp_path) -> None:
    rgb = np.random.RandomState(0).randint(0, 256, (5, 7, 3), dtype=np.uint8)
    img = rt.load_image(_png(tmp_path / "a.png", rgb))
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    np.testing.assert_array_equal(img, rgb.astype(np.float32) / np.float32(255))


def test_load_image_gray_tiled_for_color_and_rgb_to_gray(tmp_path) -> None:
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    img = rt.load_image(_png(tmp_path / "g.png", g))
    assert img.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], g / np.float32(255))
    gray = rt.load_image(_png(tmp_path / "g.png", g), color=False)
    assert gray.shape == (3, 4, 1)
    rgb = np.random.RandomState(1).randint(0, 256, (3, 4, 3), dtype=np.uint8)
    as_gray = rt.load_image(_png(tmp_path / "c.png", rgb), color=False)
    want = (rgb / np.float32(255)) @ np.asarray(rt.RGB2GRAY, np.float32)
    np.testing.assert_allclose(as_gray[:, :, 0], want, rtol=1e-6, atol=1e-7)


def test_load_image_drops_alpha_and_scales_16_bit(tmp_path) -> None:
    rgba = np.random.RandomState(2).randint(0, 256, (4, 4, 4), dtype=np.uint8)
    img = rt.load_image(_png(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(img, rgba[:, :, :3] / np.float32(255))
    g16 = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img16 = rt.load_image(tmp_path / "g16.png", color=False)
    np.testing.assert_allclose(img16[:, :, 0], g16 / 65535.0, rtol=1e-6)


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        rt.load_image(tmp_path / "missing.png")
    (tmp_path / "x.txt").write_text("not an image")
    with pytest.raises(DataError, match="cannot read image"):
        rt.load_image(tmp_path / "x.txt")


# --------------------------------------------------------------------------- transform

def test_preprocess_matches_pycaffe_transformer(tmp_path) -> None:
    rgb = np.random.RandomState(3).randint(0, 256, (6, 5, 3), dtype=np.uint8)
    img = rt.load_image(_png(tmp_path / "a.png", rgb))
    mean = np.random.RandomState(4).uniform(90, 130, (3, 6, 5)).astype(np.float32)
    pre = rt.Preprocess(raw_scale=255.0, swap=True, mean=mean, input_scale=0.017)
    got = rt.preprocess(img, (3, 6, 5), pre)
    want = _pycaffe_preprocess(img, mean=mean, input_scale=0.017)
    assert got.dtype == np.float32 and got.shape == (3, 6, 5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_preprocess_defaults_and_no_swap(tmp_path) -> None:
    rgb = np.random.RandomState(5).randint(0, 256, (4, 4, 3), dtype=np.uint8)
    img = rt.load_image(_png(tmp_path / "a.png", rgb))
    got = rt.preprocess(img, (3, 4, 4))  # defaults: raw_scale 255, RGB -> BGR, no mean
    np.testing.assert_allclose(got, rgb.transpose(2, 0, 1)[::-1].astype(np.float32), atol=1e-4)
    kept = rt.preprocess(img, (3, 4, 4), rt.Preprocess(swap=False, raw_scale=None))
    np.testing.assert_array_equal(kept, img.transpose(2, 0, 1))
    mean, note = rt.fit_mean(np.array([104.0, 117.0, 123.0]), (3, 4, 4))
    assert note is None
    got = rt.preprocess(img, (3, 4, 4), rt.Preprocess(mean=mean))
    np.testing.assert_allclose(got, _pycaffe_preprocess(img, mean=mean), atol=1e-4)


def test_preprocess_resizes_to_the_blob() -> None:
    im = np.random.RandomState(6).rand(3, 2, 3).astype(np.float32)
    up = rt.resize_image(im, (6, 4))
    np.testing.assert_allclose(up, _bilinear_half_pixel(im, 6, 4), atol=1e-5)
    out = rt.preprocess(im, (3, 6, 4), rt.Preprocess(raw_scale=None, swap=False))
    np.testing.assert_allclose(out, up.transpose(2, 0, 1), atol=1e-6)
    flat = rt.resize_image(np.full((5, 5, 1), 0.25, np.float32), (3, 2))  # pycaffe's case
    assert flat.shape == (3, 2, 1) and np.all(flat == np.float32(0.25))
    down = rt.resize_image(np.random.RandomState(7).rand(40, 30, 3).astype(np.float32), (8, 6))
    assert down.shape == (8, 6, 3) and 0 <= down.min() and down.max() <= 1


def test_fit_mean_and_mean_files(tmp_path) -> None:
    from netdef.io.blobs import write_blobproto

    m = np.random.RandomState(8).uniform(0, 255, (1, 3, 6, 6)).astype(np.float32)
    write_blobproto(tmp_path / "mean.binaryproto", m)
    loaded = rt.load_mean(tmp_path / "mean.binaryproto")
    np.testing.assert_array_equal(loaded, m[0])
    np.save(tmp_path / "mean.npy", m[0])
    np.testing.assert_array_equal(rt.load_mean(tmp_path / "mean.npy"), m[0])
    same, note = rt.fit_mean(loaded, (3, 6, 6))
    assert note is None and same.shape == (3, 6, 6)
    avg, note = rt.fit_mean(loaded, (3, 4, 4))
    assert "per-channel" in note and avg.shape == (3, 1, 1)
    np.testing.assert_allclose(avg[:, 0, 0], m[0].mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(DataError, match="channel"):
        rt.fit_mean(loaded, (1, 6, 6))
    with pytest.raises(DataError, match="channel"):
        rt.fit_mean(np.array([1.0, 2.0]), (3, 4, 4))
    with pytest.raises(DataError, match="no such mean file"):
        rt.load_mean(tmp_path / "nope.binaryproto")


# --------------------------------------------------------------------------- devices

def test_pick_device_and_tf32() -> None:
    dev = rt.pick_device(None)
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert rt.pick_device("cpu").type == "cpu"
    with pytest.raises(NetdefError, match="unknown device"):
        rt.pick_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(NetdefError, match="CUDA is not available"):
            rt.pick_device("cuda")
    rt.set_tf32(True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    rt.set_tf32(False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_dtype_autocast_channels_last_and_timer() -> None:
    assert rt.parse_dtype("float32") is None
    assert rt.parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(NetdefError, match="unknown dtype"):
        rt.parse_dtype("int8")
    lin = torch.nn.Linear(4, 3)
    with rt.autocast(torch.device("cpu"), torch.bfloat16):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with rt.autocast(torch.device("cpu"), None):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    conv = rt.to_channels_last(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = rt.to_device(torch.randn(1, 3, 5, 5), torch.device("cpu"), channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    t = rt.Timer(torch.device("cpu"))
    t.start()
    sum(range(1000))
    t.stop()
    assert t.ms() > 0


def test_default_layout_is_channels_last_for_conv_nets_on_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 3 * 3, 2))
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert rt.channels_last_pays(conv_net, cpu) is True
    assert rt.channels_last_pays(mlp, cpu) is False
    assert rt.channels_last_pays(conv_net, cuda) is False  # left to --channels-last there
    # an explicit choice wins over the default, both ways
    assert rt.choose_layout(conv_net, cpu, False) is False
    assert not conv_net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 5, 5)
    ref = conv_net(x)
    assert rt.choose_layout(conv_net, cpu) is True
    assert conv_net[0].weight.is_contiguous(memory_format=torch.channels_last)
    y = conv_net(rt.to_device(x, cpu, channels_last=True))
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)  # same math, another layout
    assert rt.choose_layout(mlp, cpu, True) is True  # asked for: done (a no-op on 2-D)
