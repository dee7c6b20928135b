"""V0 → V1: ``layers { layer { type: "conv" kernelsize: 5 … } bottom top }``.

Caffe's ``UpgradeV0Net`` does this in two passes, reproduced here:

1. *padding layers* (``type: "padding"``) disappear; their ``pad`` moves onto the conv
   or pool layer that reads their output, which then reads the padding layer's input;
2. every remaining V0 layer becomes a V1 layer: the string type goes through a fixed
   table (``"conv"`` → ``CONVOLUTION``), and the flat V0 fields go into the typed
   parameter message of that type (``kernelsize`` → ``convolution_param.kernel_size``).
   ``scale``/``meanfile``/``cropsize``/``mirror`` go to ``transform_param`` whatever
   the type.  A field that does not belong to the layer's type is dropped by Caffe with
   an error line ("Unknown parameter …"); netdef refuses it unless ``strict=False``.

Only ``name``, ``input``, ``input_dim`` and ``force_backward`` of the net survive, as in
Caffe (its V0 upgrade clears everything else).
"""
from __future__ import annotations

from typing import Any, Mapping

from netdef.errors import Loc, UpgradeError
from netdef.ir.messages import NetParameter, V0LayerParameter, V1LayerParameter
from netdef.ir.schema import ProtoEnum, fields_of, has, loc_of, make, update
from netdef.ir.upgrade.common import located, renamed_locs

# Caffe's UpgradeV0LayerType: V0 type string → V1LayerParameter.LayerType name.
V0_TYPES: Mapping[str, str] = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT", "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

ANY = "*"  # a rule target that applies whatever the layer's type
_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_DATA, _HDF5, _IMAGES, _WINDOW = ("data_param", "hdf5_data_param", "image_data_param",
                                  "window_data_param")
_TRANSFORM = "transform_param"


def _to(param: str, field: str, *types: str) -> dict[str, tuple[str, str]]:
    return {t: (param, field) for t in types}


# (V0 field, {V0 type: (V1 parameter message, its field)}, name in Caffe's error line),
# in the order Caffe's UpgradeV0LayerParameter visits them (so error lines match).
# A target field of None copies the whole message.
RULES: tuple[tuple[str, dict[str, tuple[str, str | None]], str], ...] = (
    ("num_output", {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
     "num_output"),
    ("biasterm", {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
     "biasterm"),
    ("weight_filler", {"conv": (_CONV, "weight_filler"),
                       "innerproduct": (_IP, "weight_filler")}, "weight_filler"),
    ("bias_filler", {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
     "bias_filler"),
    ("pad", {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")}, "pad"),
    ("kernelsize", {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
     "kernelsize"),
    ("group", _to(_CONV, "group", "conv"), "group"),
    ("stride", {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")}, "stride"),
    ("pool", _to(_POOL, "pool", "pool"), "pool"),
    ("dropout_ratio", _to("dropout_param", "dropout_ratio", "dropout"), "dropout_ratio"),
    ("local_size", _to("lrn_param", "local_size", "lrn"), "local_size"),
    ("alpha", _to("lrn_param", "alpha", "lrn"), "alpha"),
    ("beta", _to("lrn_param", "beta", "lrn"), "beta"),
    ("k", _to("lrn_param", "k", "lrn"), "k"),
    ("source", {"data": (_DATA, "source"), "hdf5_data": (_HDF5, "source"),
                "images": (_IMAGES, "source"), "window_data": (_WINDOW, "source"),
                "infogain_loss": ("infogain_loss_param", "source")}, "source"),
    ("scale", _to(_TRANSFORM, "scale", ANY), "scale"),
    ("meanfile", _to(_TRANSFORM, "mean_file", ANY), "meanfile"),
    ("batchsize", {"data": (_DATA, "batch_size"), "hdf5_data": (_HDF5, "batch_size"),
                   "images": (_IMAGES, "batch_size"),
                   "window_data": (_WINDOW, "batch_size")}, "batchsize"),
    ("cropsize", _to(_TRANSFORM, "crop_size", ANY), "cropsize"),
    ("mirror", _to(_TRANSFORM, "mirror", ANY), "mirror"),
    ("rand_skip", {"data": (_DATA, "rand_skip"), "images": (_IMAGES, "rand_skip")},
     "rand_skip"),
    ("shuffle_images", _to(_IMAGES, "shuffle", "images"), "shuffle"),
    ("new_height", _to(_IMAGES, "new_height", "images"), "new_height"),
    ("new_width", _to(_IMAGES, "new_width", "images"), "new_width"),
    ("concat_dim", _to("concat_param", "concat_dim", "concat"), "concat_dim"),
    ("det_fg_threshold", _to(_WINDOW, "fg_threshold", "window_data"), "det_fg_threshold"),
    ("det_bg_threshold", _to(_WINDOW, "bg_threshold", "window_data"), "det_bg_threshold"),
    ("det_fg_fraction", _to(_WINDOW, "fg_fraction", "window_data"), "det_fg_fraction"),
    ("det_context_pad", _to(_WINDOW, "context_pad", "window_data"), "det_context_pad"),
    ("det_crop_mode", _to(_WINDOW, "crop_mode", "window_data"), "det_crop_mode"),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None)}, "hdf5_output_param"),
)


def needs_v0_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsV0ToV1Upgrade: some ``layers`` entry holds a V0 ``layer``."""
    return any(has(conn, "layer") for conn in net.layers)


def upgrade_v0_net(net: NetParameter, errors: list[str], *, strict: bool) -> NetParameter:
    """The V1 net Caffe's UpgradeV0Net makes; Caffe's error lines go to ``errors``."""
    for conn in net.layers:
        if not has(conn, "layer"):
            raise UpgradeError(
                f"layer '{conn.name}' is written in the V1 format inside a V0 net",
                loc=loc_of(conn),
                hint="Caffe's V0 upgrade would keep only its bottoms and tops; write it "
                     "as layers { layer { name type … } bottom top } like the others")
    layers = tuple(_upgrade_layer(conn, errors, strict) for conn in fold_padding(net))
    fields: dict[str, Any] = {"layers": layers, "input": net.input,
                              "input_dim": net.input_dim}
    for name in ("name", "force_backward"):
        if has(net, name):
            fields[name] = getattr(net, name)
    keep = {k: (k,) for k in ("name", "layers", "input", "input_dim", "force_backward")}
    return located(make(NetParameter, **fields), net._loc, renamed_locs(net, keep))


def fold_padding(net: NetParameter) -> list[V1LayerParameter]:
    """Caffe's UpgradeV0PaddingLayers: drop padding layers, move their pad downstream."""
    last_top: dict[str, int] = {blob: -1 for blob in net.input}
    out: list[V1LayerParameter] = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            out.append(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise UpgradeError(
                    f"V0 layer '{v0.name}' reads blob '{blob}', which no earlier layer "
                    f"produces and which is not a net input", loc=loc_of(conn, "bottom", j),
                    hint="Caffe's V0 upgrade stops here ('Unknown blob input'); V0 nets "
                         "must list layers in order")
            source = last_top[blob]
            if source < 0 or net.layers[source].layer.type != "padding":
                continue
            pad_conn = net.layers[source]
            _check_padding_use(conn, pad_conn, j)
            consumer = out[-1]
            bottoms = list(consumer.bottom)
            bottoms[j] = pad_conn.bottom[0]
            out[-1] = update(consumer, bottom=bottoms,
                             layer=update(consumer.layer, pad=pad_conn.layer.pad))
        for blob in conn.top:
            last_top[blob] = i
    return out


def _check_padding_use(conn: V1LayerParameter, pad_conn: V1LayerParameter, j: int) -> None:
    """The CHECKs Caffe makes before folding a padding layer into its reader."""
    v0, pad_name = conn.layer, pad_conn.layer.name
    where = loc_of(conn, "bottom", j)
    if v0.type not in ("conv", "pool"):
        raise UpgradeError(
            f"padding layer '{pad_name}' feeds V0 layer '{v0.name}' of type \"{v0.type}\"; "
            f"only a conv or pool layer can absorb a padding layer", loc=where,
            hint="Caffe's V0 upgrade refuses this ('Padding layer input to "
                 "non-convolutional / non-pooling layer type')")
    problems = [(len(conn.bottom) != 1, f"'{v0.name}' must have exactly one bottom"),
                (len(pad_conn.bottom) != 1, f"'{pad_name}' must have exactly one bottom"),
                (len(pad_conn.top) != 1, f"'{pad_name}' must have exactly one top")]
    for bad, what in problems:
        if bad:
            raise UpgradeError(f"cannot fold padding layer '{pad_name}' into '{v0.name}': "
                               f"{what}", loc=where,
                               hint="Caffe's V0 upgrade refuses this padding layer")


def _upgrade_layer(conn: V1LayerParameter, errors: list[str], strict: bool) -> V1LayerParameter:
    """Caffe's UpgradeV0LayerParameter for one ``layers { layer { … } bottom top }``."""
    v0 = conn.layer
    vtype = v0.type
    fields: dict[str, Any] = {"bottom": conn.bottom, "top": conn.top, "blobs": v0.blobs,
                              "blobs_lr": v0.blobs_lr, "weight_decay": v0.weight_decay}
    if has(v0, "name"):
        fields["name"] = v0.name
    if has(v0, "type"):
        if vtype not in V0_TYPES:
            raise UpgradeError(f"unknown V0 layer type \"{vtype}\"", loc=loc_of(v0, "type"),
                               hint="V0 types are " + ", ".join(sorted(V0_TYPES)))
        fields["type"] = V1LayerParameter.LayerType[V0_TYPES[vtype]]
    params: dict[str, dict[str, Any]] = {}
    param_locs: dict[str, Loc | None] = {}
    for v0_field, targets, label in RULES:
        if not has(v0, v0_field):
            continue
        target = targets.get(vtype) or targets.get(ANY)
        if target is None:
            _wrong_type(v0, v0_field, label, errors, strict)
            continue
        pname, tfield = target
        param_locs.setdefault(pname, loc_of(v0, v0_field))
        value = getattr(v0, v0_field)
        if tfield is None:
            fields[pname] = value
        else:
            _put(params.setdefault(pname, {}), pname, tfield, value)
    for pname, values in params.items():
        cls = fields_of(V1LayerParameter)[pname].type
        fields[pname] = make(cls, _loc=param_locs[pname], **values)
    locs = dict(renamed_locs(conn, {"bottom": ("bottom",), "top": ("top",)}))
    locs.update(renamed_locs(v0, {k: (k,) for k in
                                  ("name", "type", "blobs", "blobs_lr", "weight_decay")}))
    locs.update({p: (loc,) for p, loc in param_locs.items() if loc is not None})
    return located(make(V1LayerParameter, **fields), loc_of(conn), locs)


def _put(values: dict[str, Any], pname: str, tfield: str, value: Any) -> None:
    """Set (or append, for a repeated target) one field of a parameter message."""
    spec = fields_of(fields_of(V1LayerParameter)[pname].type)[tfield]
    if spec.is_enum and isinstance(value, ProtoEnum):
        value = spec.type[value.name]  # V0 PoolMethod → PoolingParameter.PoolMethod
    if spec.repeated:
        values[tfield] = values.get(tfield, ()) + (value,)
    else:
        values[tfield] = value


def _wrong_type(v0: V0LayerParameter, v0_field: str, label: str, errors: list[str],
                strict: bool) -> None:
    """A V0 field that the layer's type cannot hold: Caffe drops it with an error line."""
    line = f"Unknown parameter {label} for layer type {v0.type}"
    if strict:
        raise UpgradeError(
            f"V0 layer '{v0.name}' of type \"{v0.type}\" has '{v0_field}', which that type "
            f"does not take", loc=loc_of(v0, v0_field),
            hint=f"Caffe's upgrade drops it ('{line}'); remove the field, or upgrade "
                 f"with strict=False to drop it as Caffe does")
    errors.append(line)


__all__ = ["V0_TYPES", "fold_padding", "needs_v0_upgrade", "upgrade_v0_net"]
