"""ImageData on real PNG/JPEG files written with Pillow: BGR order, gray, resize, labels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netdef.api import parse_net_text
from netdef.errors import DataError
from netdef.training.data import make_source
from netdef.training.data.images import decode_image, resize_bilinear


def layer(text: str):  # noqa: ANN201
    return parse_net_text(f"layer {{ {text} }}").layer[0]


def image_layer(params: str, transform: str = "") -> object:
    return layer('name: "img" type: "ImageData" top: "data" top: "label" '
                 f'transform_param {{ {transform} }} image_data_param {{ {params} }}')


@pytest.fixture()
def images(tmp_path):
    """Four RGB PNGs, one gray PNG, one JPEG under tmp_path/imgs/, with labels."""
    gen = np.random.default_rng(3)
    root = tmp_path / "imgs"
    (root / "sub dir").mkdir(parents=True)
    rgb = [gen.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(4)]
    names = ["a.png", "b.png", "sub dir/c d.png", "e.png"]
    for name, arr in zip(names, rgb):
        Image.fromarray(arr).save(root / name)
    gray = gen.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray).save(root / "g.png")
    smooth = np.repeat(np.linspace(0, 255, 5, dtype=np.uint8)[None, :, None], 6, 0)
    Image.fromarray(np.repeat(smooth, 3, 2)).save(root / "j.jpg", quality=100)
    (tmp_path / "list.txt").write_text(
        "".join(f"{n} {i}\n" for i, n in enumerate(names)) + "g.png 7\nj.jpg 9\n")
    return tmp_path, rgb, gray


def test_color_images_are_bgr_with_labels_and_root_folder(images):
    tmp, rgb, gray = images
    lay = image_layer('source: "list.txt" batch_size: 4 root_folder: "imgs/"')
    with make_source(lay, "TEST", tmp) as src:
        assert src.top_shapes() == {"data": (4, 3, 6, 5), "label": (4,)}
        b = src.next_batch()
        b2 = src.next_batch()
        b3 = src.next_batch()
    expect = np.stack([a[:, :, ::-1].transpose(2, 0, 1) for a in rgb]).astype(np.float32)
    assert b["data"].tobytes() == expect.tobytes()
    assert b["label"].tolist() == [0, 1, 2, 3]
    assert np.array_equal(b2["data"][0], np.repeat(gray[None], 3, 0))  # gray read as colour
    assert b2["label"].tolist() == [7, 9, 0, 1]  # wrapped to the first line
    assert np.abs(b2["data"][1] - np.linspace(0, 255, 5)).max() <= 3  # JPEG ≈ original
    assert b3["label"].tolist() == [2, 3, 7, 9]


def test_gray_resize_and_transform(images):
    tmp, rgb, gray = images
    (tmp / "g.txt").write_text("imgs/g.png 4\n")
    lay = image_layer('source: "g.txt" batch_size: 2 is_color: false new_height: 3 '
                      'new_width: 10', "scale: 0.5 mean_value: 10")
    with make_source(lay, "TRAIN", tmp) as src:
        assert src.top_shapes() == {"data": (2, 1, 3, 10), "label": (2,)}
        b = src.next_batch()
    small = resize_bilinear(gray[None], 3, 10)
    expect = (small.astype(np.float32) - np.float32(10)) * np.float32(0.5)
    assert b["data"][0].tobytes() == expect.tobytes() and b["label"].tolist() == [4, 4]


def test_resize_is_bilinear_with_half_pixel_centres():
    img = np.array([[[0, 100, 200]]], np.uint8)  # 1x1x3
    assert resize_bilinear(img, 1, 6)[0, 0].tolist() == [0, 25, 75, 125, 175, 200]
    assert resize_bilinear(img, 2, 3).tolist() == [[[0, 100, 200], [0, 100, 200]]]
    const = np.full((3, 5, 7), 42, np.uint8)
    assert np.all(resize_bilinear(const, 11, 2) == 42)
    two = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) * 10
    assert resize_bilinear(two, 2, 2)[0].tolist() == [[25, 45], [105, 125]]  # 2x2 averages


def test_decode_native_keeps_gray_and_color_channel_order(images):
    tmp, rgb, gray = images
    raw_rgb = (tmp / "imgs" / "a.png").read_bytes()
    raw_gray = (tmp / "imgs" / "g.png").read_bytes()
    assert decode_image(raw_gray, "native").shape == (1, 6, 5)
    assert np.array_equal(decode_image(raw_rgb, "native"), rgb[0][:, :, ::-1].transpose(2, 0, 1))
    assert decode_image(raw_rgb, "gray").shape == (1, 6, 5)
    with pytest.raises(DataError):
        decode_image(b"not an image")


def test_shuffle_rand_skip_and_bad_lines(images):
    tmp, _, _ = images
    lay = image_layer('source: "list.txt" batch_size: 6 root_folder: "imgs/" shuffle: true')
    with make_source(lay, "TRAIN", tmp, seed=5) as src:
        labels = src.next_batch()["label"]
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 7, 9]
    lay = image_layer('source: "list.txt" batch_size: 1 root_folder: "imgs/" rand_skip: 6')
    with make_source(lay, "TRAIN", tmp, seed=1) as src:
        assert src.next_batch()["label"][0] in (0, 1, 2, 3, 7, 9)
    (tmp / "bad.txt").write_text("a.png 1\nnolabel\n")
    with pytest.raises(DataError) as e:
        make_source(image_layer('source: "bad.txt" batch_size: 1 root_folder: "imgs/"'),
                    "TRAIN", tmp)
    assert e.value.line == 2
    (tmp / "miss.txt").write_text("missing.png 1\n")
    with pytest.raises(DataError) as e:
        make_source(image_layer('source: "miss.txt" batch_size: 1 root_folder: "imgs/"'),
                    "TRAIN", tmp)
    assert e.value.file == "imgs/missing.png"
    with pytest.raises(DataError) as e:  # Caffe concatenates root_folder and path
        make_source(image_layer('source: "list.txt" batch_size: 1 root_folder: "imgs"'),
                    "TRAIN", tmp)
    assert e.value.file == "imgsa.png" and 'root_folder: "imgs/"' in e.value.hint


def test_images_of_different_sizes_in_one_batch_are_an_error(images):
    tmp, _, _ = images
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp / "imgs" / "small.png")
    (tmp / "mixed.txt").write_text("a.png 0\nsmall.png 1\n")
    lay = image_layer('source: "mixed.txt" batch_size: 2 root_folder: "imgs/"')
    with make_source(lay, "TRAIN", tmp) as src, pytest.raises(DataError, match="new_height"):
        src.next_batch()
