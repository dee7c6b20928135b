"""The shared window helper: Caffe's conv (floor) and pooling (ceil + clip) rules, and
every way Caffe spells kernel / stride / pad / dilation."""
from __future__ import annotations

import pytest

from netdef.errors import ShapeError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import ConvolutionParameter, PoolingParameter
from netdef.layers.spatial import (Window, conv_out, conv_shape, conv_window, deconv_out,
                                   pool_out, pool_shape, pool_window)
from netdef.syntax import parse_text


def conv(text: str):
    return build_message(ConvolutionParameter, parse_text(text), BuildContext(None))


def pool(text: str):
    return build_message(PoolingParameter, parse_text(text), BuildContext(None))


# size, kernel, stride, pad, ceil_mode -> out
POOL_CASES = [
    (9, 4, 4, 2, True, 3),      # clip: ceil(9/4)+1 = 4, but window 4 would start at 12 >= 9+2
    (9, 4, 4, 2, False, 3),     # FLOOR: floor(9/4)+1 (the clip never fires when flooring)
    (10, 3, 2, 0, True, 5),     # ceil(7/2)+1
    (10, 3, 2, 0, False, 4),    # round_mode: FLOOR
    (10, 4, 4, 2, True, 3),     # ceil(10/4)+1 = 4, (4-1)*4=12 >= 10+2 → clipped to 3
    (112, 3, 2, 0, True, 56),   # GoogLeNet pool1/3x3_s2 (floor would give 55)
    (112, 3, 2, 0, False, 55),
    (55, 3, 2, 0, True, 27),    # AlexNet pool1
    (27, 3, 2, 0, True, 13),    # AlexNet pool2
    (13, 3, 2, 0, True, 6),     # AlexNet pool5
    (32, 3, 2, 0, True, 16),    # cifar10 pool1: ceil(29/2)+1
    (24, 2, 2, 0, True, 12),    # LeNet
    (14, 3, 1, 1, True, 14),    # GoogLeNet 3x3 s1 p1 inception pool
    (7, 7, 1, 0, True, 1),      # GoogLeNet pool5/7x7_s1
    (5, 3, 3, 1, True, 2),      # ceil(4/3)+1 = 3, (3-1)*3=6 >= 5+1 → 2
    (4, 2, 2, 1, True, 3),      # ceil(4/2)+1 = 3, 4 < 5 → stays 3
]


@pytest.mark.parametrize("size,k,s,p,ceil_mode,want", POOL_CASES)
def test_pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool, want: int) -> None:
    assert pool_out(size, k, s, p, ceil_mode=ceil_mode) == want


def test_pool_clip_applies_to_both_axes_when_any_pad_is_set() -> None:
    # H has no pad, but W does: Caffe's `if (pad_h_ || pad_w_)` clips H as well
    assert pool_out(5, 1, 3, 0) == 3
    assert pool_out(5, 1, 3, 0, clip=True) == 2
    w = Window((1, 3), (3, 3), (0, 1), (1, 1))
    assert pool_shape((5, 5), w, True, "t") == (2, 2)


# size, kernel, stride, pad, dilation -> out
CONV_CASES = [
    (227, 11, 4, 0, 1, 55),     # AlexNet conv1
    (27, 5, 1, 2, 1, 27),       # AlexNet conv2
    (224, 7, 2, 3, 1, 112),     # GoogLeNet conv1: (224+6-7)//2+1 = 112 (floor of 112.5)
    (28, 5, 1, 0, 1, 24),       # LeNet conv1
    (10, 3, 2, 0, 1, 4),        # floor((10-3)/2)+1
    (10, 3, 1, 0, 2, 6),        # dilation 2: extent 5
    (10, 3, 1, 2, 2, 10),       # dilation with pad: "same"
    (7, 3, 3, 0, 3, 1),         # extent 7 fills the input exactly
]


@pytest.mark.parametrize("size,k,s,p,d,want", CONV_CASES)
def test_conv_out(size: int, k: int, s: int, p: int, d: int, want: int) -> None:
    assert conv_out(size, k, s, p, d) == want


def test_deconv_inverts_conv() -> None:
    assert deconv_out(55, 11, 4, 0) == 227
    assert deconv_out(16, 4, 2, 1) == 32     # FCN-style 2× upsampling
    assert deconv_out(6, 3, 1, 0, 2) == 10   # inverse of (10, 3, 1, 0, 2)


def test_kernel_larger_than_padded_input() -> None:
    with pytest.raises(ValueError):
        conv_out(4, 5)
    with pytest.raises(ValueError):
        pool_out(2, 3)
    with pytest.raises(ShapeError, match="exceeds the padded input"):
        conv_shape((4, 4), conv_window(conv("kernel_size: 5"), 2, "c"), "c")


def test_conv_window_spellings() -> None:
    w = conv_window(conv("kernel_size: 3 stride: 2 pad: 1"), 2, "c")
    assert (w.kernel, w.stride, w.pad, w.dilation) == ((3, 3), (2, 2), (1, 1), (1, 1))
    w = conv_window(conv("kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 1"), 2, "c")
    assert (w.kernel, w.stride, w.pad) == ((3, 1), (2, 1), (1, 0))
    w = conv_window(conv("kernel_size: 3 kernel_size: 5 dilation: 2"), 2, "c")
    assert (w.kernel, w.dilation, w.extent) == ((3, 5), (2, 2), (5, 9))
    w = conv_window(conv("kernel_size: 3 stride: 1 stride: 2 stride: 3"), 3, "c")  # N-D
    assert (w.kernel, w.stride, w.pad) == ((3, 3, 3), (1, 2, 3), (0, 0, 0))
    assert conv_window(conv("kernel_size: 4"), 1, "c").kernel == (4,)


@pytest.mark.parametrize("text,n,msg", [
    ("stride: 2", 2, "no kernel size"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", 2, "not both"),
    ("kernel_h: 3", 2, "nonzero"),                       # kernel_w missing → 0, like Caffe
    ("kernel_h: 3 kernel_w: 3", 3, "only be used for 2-D"),
    ("kernel_size: 3 kernel_size: 3", 3, "once per spatial"),
    ("kernel_size: 3 stride_h: 2", 2, "positive"),        # stride_w missing
    ("kernel_size: 0", 2, "nonzero"),
])
def test_conv_window_errors(text: str, n: int, msg: str) -> None:
    with pytest.raises(ShapeError, match=msg):
        conv_window(conv(text), n, "layer 'c'")


def test_pool_window_spellings() -> None:
    w = pool_window(pool("kernel_size: 3 stride: 2"), (10, 10), "p")
    assert (w.kernel, w.stride, w.pad) == ((3, 3), (2, 2), (0, 0))
    p = pool("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0")
    w = pool_window(p, (9, 9), "p")
    assert (w.kernel, w.stride, w.pad) == ((3, 2), (2, 1), (1, 0))
    w = pool_window(pool("pool: AVE global_pooling: true"), (7, 5), "p")
    assert (w.kernel, w.stride, w.pad) == ((7, 5), (1, 1), (0, 0))
    assert pool_shape((7, 5), w, True, "p") == (1, 1)


@pytest.mark.parametrize("text,msg", [
    ("stride: 2", "no kernel size"),
    ("kernel_h: 3", "no kernel size"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("global_pooling: true kernel_size: 3", "cannot be specified"),
    ("global_pooling: true stride: 2", "only pad = 0 and stride = 1"),
    ("kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1", "pad_h and pad_w"),
    ("kernel_size: 3 stride_h: 2", "stride_h and stride_w"),
    ("kernel_size: 3 pad: 3", "smaller than the kernel"),
    ("kernel_size: 3 pad: 1 pool: STOCHASTIC", "only for average and max"),
])
def test_pool_window_errors(text: str, msg: str) -> None:
    with pytest.raises(ShapeError, match=msg):
        pool_window(pool(text), (9, 9), "layer 'p'")
