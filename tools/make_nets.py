"""Write the shipped ImageNet nets in nets/ from the papers' facts.

AlexNet (Krizhevsky et al. 2012) and CaffeNet as BVLC's reference prototxts lay
them out (layer names, fillers, LRN k left at Caffe's default 1, 2 groups in
conv2/4/5), VGG-16/19 (Simonyan & Zisserman 2014: 3×3 pad-1 convs, 2×2/2 max-pool,
fc 4096-4096-1000).  Each net comes as ``<name>.net`` (deploy: Input 10×3×H×W →
``prob``), ``<name>_train_val.net`` (LMDB Data layers, TRAIN/TEST rules) and
``<name>_solver.net`` (the published hyper-parameters).

Run ``python tools/make_nets.py`` to regenerate; the output is committed.
"""
from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "nets"
LR = "  param {\n    lr_mult: 1\n    decay_mult: 1\n  }\n  param {\n    lr_mult: 2\n    decay_mult: 0\n  }\n"


def filler(kind: str, value: float) -> str:
    if kind == "gaussian":
        return f'type: "gaussian"\n      std: {value}'
    return f'type: "constant"\n      value: {value}'


def conv(name: str, bottom: str, n: int, k: int, *, stride: int = 1, pad: int = 0,
         group: int = 1, std: float = 0.01, bias: float = 0.0) -> str:
    opts = f"    num_output: {n}\n"
    if pad:
        opts += f"    pad: {pad}\n"
    opts += f"    kernel_size: {k}\n"
    if stride != 1:
        opts += f"    stride: {stride}\n"
    if group != 1:
        opts += f"    group: {group}\n"
    return (f'layer {{\n  name: "{name}"\n  type: "Convolution"\n  bottom: "{bottom}"\n'
            f'  top: "{name}"\n{LR}  convolution_param {{\n{opts}'
            f'    weight_filler {{\n      {filler("gaussian", std)}\n    }}\n'
            f'    bias_filler {{\n      {filler("constant", bias)}\n    }}\n  }}\n}}\n')


def fc(name: str, bottom: str, n: int, *, std: float, bias: float) -> str:
    return (f'layer {{\n  name: "{name}"\n  type: "InnerProduct"\n  bottom: "{bottom}"\n'
            f'  top: "{name}"\n{LR}  inner_product_param {{\n    num_output: {n}\n'
            f'    weight_filler {{\n      {filler("gaussian", std)}\n    }}\n'
            f'    bias_filler {{\n      {filler("constant", bias)}\n    }}\n  }}\n}}\n')


def relu(name: str, blob: str) -> str:
    return f'layer {{\n  name: "{name}"\n  type: "ReLU"\n  bottom: "{blob}"\n  top: "{blob}"\n}}\n'


def lrn(name: str, bottom: str) -> str:
    return (f'layer {{\n  name: "{name}"\n  type: "LRN"\n  bottom: "{bottom}"\n  top: "{name}"\n'
            f'  lrn_param {{\n    local_size: 5\n    alpha: 0.0001\n    beta: 0.75\n  }}\n}}\n')


def pool(name: str, bottom: str, k: int, s: int) -> str:
    return (f'layer {{\n  name: "{name}"\n  type: "Pooling"\n  bottom: "{bottom}"\n'
            f'  top: "{name}"\n  pooling_param {{\n    pool: MAX\n    kernel_size: {k}\n'
            f'    stride: {s}\n  }}\n}}\n')


def dropout(name: str, blob: str) -> str:
    return (f'layer {{\n  name: "{name}"\n  type: "Dropout"\n  bottom: "{blob}"\n  top: "{blob}"\n'
            f'  dropout_param {{\n    dropout_ratio: 0.5\n  }}\n}}\n')


def input_layer(h: int) -> str:
    return ('layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n  input_param {\n'
            f'    shape {{\n      dim: 10\n      dim: 3\n      dim: {h}\n      dim: {h}\n'
            '    }\n  }\n}\n')


def data_layers(crop: int, train_batch: int, test_batch: int, mean: str) -> str:
    out = ""
    for phase, src, batch, mirror in (("TRAIN", "train", train_batch, "true"),
                                      ("TEST", "val", test_batch, "false")):
        out += (f'layer {{\n  name: "data"\n  type: "Data"\n  top: "data"\n  top: "label"\n'
                f'  include {{\n    phase: {phase}\n  }}\n  transform_param {{\n'
                f'    mirror: {mirror}\n    crop_size: {crop}\n{mean}  }}\n'
                f'  data_param {{\n    source: "examples/imagenet/ilsvrc12_{src}_lmdb"\n'
                f'    batch_size: {batch}\n    backend: LMDB\n  }}\n}}\n')
    return out


def heads(top: str) -> tuple[str, str]:
    deploy = (f'layer {{\n  name: "prob"\n  type: "Softmax"\n  bottom: "{top}"\n'
              f'  top: "prob"\n}}\n')
    train = (f'layer {{\n  name: "accuracy"\n  type: "Accuracy"\n  bottom: "{top}"\n'
             f'  bottom: "label"\n  top: "accuracy"\n  include {{\n    phase: TEST\n  }}\n}}\n'
             f'layer {{\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "{top}"\n'
             f'  bottom: "label"\n  top: "loss"\n}}\n')
    return deploy, train


def alexnet_body(caffenet: bool) -> str:
    """conv1..fc8; CaffeNet pools before normalising and uses other bias values."""
    b = (0, 1, 0, 1, 1, 1) if caffenet else (0, 0.1, 0, 0.1, 0.1, 0.1)
    s = conv("conv1", "data", 96, 11, stride=4, bias=b[0]) + relu("relu1", "conv1")
    if caffenet:
        s += pool("pool1", "conv1", 3, 2) + lrn("norm1", "pool1")
        s += conv("conv2", "norm1", 256, 5, pad=2, group=2, bias=b[1]) + relu("relu2", "conv2")
        s += pool("pool2", "conv2", 3, 2) + lrn("norm2", "pool2")
        s += conv("conv3", "norm2", 384, 3, pad=1, bias=b[2])
    else:
        s += lrn("norm1", "conv1") + pool("pool1", "norm1", 3, 2)
        s += conv("conv2", "pool1", 256, 5, pad=2, group=2, bias=b[1]) + relu("relu2", "conv2")
        s += lrn("norm2", "conv2") + pool("pool2", "norm2", 3, 2)
        s += conv("conv3", "pool2", 384, 3, pad=1, bias=b[2])
    s += relu("relu3", "conv3")
    s += conv("conv4", "conv3", 384, 3, pad=1, group=2, bias=b[3]) + relu("relu4", "conv4")
    s += conv("conv5", "conv4", 256, 3, pad=1, group=2, bias=b[4]) + relu("relu5", "conv5")
    s += pool("pool5", "conv5", 3, 2)
    s += fc("fc6", "pool5", 4096, std=0.005, bias=b[5]) + relu("relu6", "fc6") + dropout("drop6", "fc6")
    s += fc("fc7", "fc6", 4096, std=0.005, bias=b[5]) + relu("relu7", "fc7") + dropout("drop7", "fc7")
    s += fc("fc8", "fc7", 1000, std=0.01, bias=0)
    return s


def vgg_body(blocks: tuple[int, ...]) -> str:
    s, bottom = "", "data"
    widths = (64, 128, 256, 512, 512)
    for i, (n, w) in enumerate(zip(blocks, widths), start=1):
        for j in range(1, n + 1):
            name = f"conv{i}_{j}"
            s += conv(name, bottom, w, 3, pad=1, std=0.01, bias=0) + relu(f"relu{i}_{j}", name)
            bottom = name
        s += pool(f"pool{i}", bottom, 2, 2)
        bottom = f"pool{i}"
    s += fc("fc6", bottom, 4096, std=0.005, bias=0.1) + relu("relu6", "fc6") + dropout("drop6", "fc6")
    s += fc("fc7", "fc6", 4096, std=0.005, bias=0.1) + relu("relu7", "fc7") + dropout("drop7", "fc7")
    s += fc("fc8", "fc7", 1000, std=0.01, bias=0)
    return s


def solver(net: str, prefix: str, *, policy: str, max_iter: int, test_iter: int) -> str:
    return (f'net: "nets/{net}_train_val.net"\ntest_iter: {test_iter}\ntest_interval: 1000\n'
            f'base_lr: 0.01\nlr_policy: "{policy[0]}"\ngamma: 0.1\n{policy[1]}display: 20\n'
            f'max_iter: {max_iter}\nmomentum: 0.9\nweight_decay: 0.0005\nsnapshot: 10000\n'
            f'snapshot_prefix: "snapshots/{prefix}"\nsolver_mode: GPU\n')


def write(name: str, text: str) -> None:
    (OUT / name).write_text(text)
    print("wrote", OUT / name)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    mean_file = '    mean_file: "data/ilsvrc12/imagenet_mean.binaryproto"\n'
    mean_vgg = "    mean_value: 103.939\n    mean_value: 116.779\n    mean_value: 123.68\n"
    specs = [("alexnet", "AlexNet", alexnet_body(False), 227, mean_file, 256, "fc8"),
             ("caffenet", "CaffeNet", alexnet_body(True), 227, mean_file, 256, "fc8"),
             ("vgg16", "VGG_ILSVRC_16_layers", vgg_body((2, 2, 3, 3, 3)), 224, mean_vgg, 256, "fc8"),
             ("vgg19", "VGG_ILSVRC_19_layers", vgg_body((2, 2, 4, 4, 4)), 224, mean_vgg, 256, "fc8")]
    for key, title, body, size, mean, batch, top in specs:
        deploy_head, train_head = heads(top)
        write(f"{key}.net", f'name: "{title}"\n' + input_layer(size) + body + deploy_head)
        write(f"{key}_train_val.net", f'name: "{title}"\n'
              + data_layers(size, batch, 50, mean) + body + train_head)
        if key.startswith("vgg"):
            policy = ("multistep", "stepvalue: 100000\nstepvalue: 200000\nstepvalue: 300000\n")
            write(f"{key}_solver.net", solver(key, f"{key}_train", policy=policy,
                                               max_iter=370000, test_iter=1000))
        else:
            write(f"{key}_solver.net", solver(key, f"{key}_train", policy=("step", "stepsize: 100000\n"),
                                               max_iter=450000, test_iter=1000))


if __name__ == "__main__":
    main()
