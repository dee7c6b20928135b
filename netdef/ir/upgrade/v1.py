"""V1 → current format: ``layers { type: CONVOLUTION blobs_lr: 1 … }`` → ``layer { }``.

Two of Caffe's steps live here because both act on V1 layers:

* ``UpgradeNetDataTransformation``: 2014 data layers kept ``scale``, ``mean_file``,
  ``crop_size`` and ``mirror`` inside ``data_param`` / ``image_data_param`` /
  ``window_data_param``; they move to ``transform_param``.
* ``UpgradeV1Net``: each V1 layer becomes a ``LayerParameter``: the enum type becomes
  the type string (from the layer registry's ``v1_type``), ``blobs_lr`` /
  ``weight_decay`` / V1 ``param`` names / ``blob_share_mode`` become ``param { }``
  specs by position, and everything else (bottoms, tops, include/exclude, loss_weight,
  blobs, every ``*_param``) is copied as it is.
"""
from __future__ import annotations

from typing import Any

from netdef.errors import UpgradeError
from netdef.ir.messages import LayerParameter, NetParameter, ParamSpec, V1LayerParameter
from netdef.ir.schema import fields_of, has, loc_of, make, update
from netdef.ir.upgrade.common import field_locs, located, renamed_locs
from netdef.layers import registry

# V1 data layer type → the parameter message that used to hold transformation fields.
DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
               "WINDOW_DATA": "window_data_param"}
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# V1 fields that do not copy across unchanged (everything else shares its name).
_SPECIAL = {"type", "param", "blob_share_mode", "blobs_lr", "weight_decay", "layer"}
_PARAM_SOURCES = ("param", "blob_share_mode", "blobs_lr", "weight_decay")


def _data_param_of(layer: V1LayerParameter) -> str | None:
    return DATA_PARAMS.get(layer.type.name) if has(layer, "type") else None


def needs_data_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsDataUpgrade: a V1 data layer sets a transformation field."""
    for layer in net.layers:
        pname = _data_param_of(layer)
        if pname and any(has(getattr(layer, pname), f) for f in TRANSFORM_FIELDS):
            return True
    return False


def upgrade_data_transformation(net: NetParameter) -> NetParameter:
    """Caffe's UpgradeNetDataTransformation over every V1 layer."""
    return update(net, layers=[_move_transform(layer) for layer in net.layers])


def _move_transform(layer: V1LayerParameter) -> V1LayerParameter:
    pname = _data_param_of(layer)
    if pname is None:
        return layer
    param = getattr(layer, pname)
    moved = {f: getattr(param, f) for f in TRANSFORM_FIELDS if has(param, f)}
    # Caffe reaches both messages through mutable_*(), so on every data layer they
    # end up present, even when nothing moved (an empty ``transform_param { }``).
    return update(layer, **{pname: update(param, **{f: None for f in moved}),
                            "transform_param": update(layer.transform_param, **moved)})


def needs_v1_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsV1ToV2Upgrade: the net has ``layers`` entries."""
    return len(net.layers) > 0


def upgrade_v1_net(net: NetParameter) -> NetParameter:
    """Caffe's UpgradeV1Net: ``layers`` → ``layer``; the net's other fields stay."""
    if net.layer:
        raise mixed_layers_error(net)
    layers = tuple(upgrade_v1_layer(v1) for v1 in net.layers)
    locs = dict(field_locs(net))
    locs.pop("layers", None)
    locs.update(renamed_locs(net, {"layer": ("layers",)}))
    return located(update(net, layers=None, layer=layers), net._loc, locs)


def mixed_layers_error(net: NetParameter) -> UpgradeError:
    """Caffe refuses a net that has both ``layer`` and ``layers`` entries."""
    legacy = loc_of(net, "layers")
    where = f" (the first 'layers' is at line {legacy.line})" if legacy and legacy.line else ""
    return UpgradeError(
        f"the net mixes 'layer {{ }}' (current format) with legacy 'layers {{ }}'{where}",
        loc=legacy or loc_of(net, "layer"),
        hint="Caffe refuses such a file ('Refusing to upgrade inconsistent NetParameter "
             "input'); write every layer in one format")


def upgrade_v1_layer(v1: V1LayerParameter) -> LayerParameter:
    """Caffe's UpgradeV1LayerParameter for one layer."""
    fields: dict[str, Any] = {}
    modern = fields_of(LayerParameter)
    for name in fields_of(V1LayerParameter):
        if name not in _SPECIAL and name in modern and has(v1, name):
            fields[name] = getattr(v1, name)
    if has(v1, "type"):
        fields["type"] = v1_type_string(v1)
    fields["param"] = _param_specs(v1)
    locs = renamed_locs(v1, {name: (name,) for name in fields if name != "param"})
    locs.update(renamed_locs(v1, {"param": _PARAM_SOURCES}))
    return located(make(LayerParameter, **fields), v1._loc, locs)


def v1_type_string(v1: V1LayerParameter) -> str:
    """The type string of a V1 enum type, as the layer registry declares it."""
    name = v1.type.name
    if name == "NONE":
        return ""  # Caffe's UpgradeV1LayerType maps NONE to the empty type
    defn = registry.by_v1_name(name)
    if defn is None:
        raise UpgradeError(
            f"V1 layer type {name} (layer '{v1.name}') has no modern type registered",
            loc=loc_of(v1, "type"),
            hint=f"no layer definition declares v1_type = \"{name}\" in the layer registry")
    return defn.type


def _param_specs(v1: V1LayerParameter) -> tuple[ParamSpec, ...]:
    """``param { name share_mode lr_mult decay_mult }`` from the four V1 lists, by index."""
    count = max(len(getattr(v1, f)) for f in _PARAM_SOURCES)
    specs = []
    for i in range(count):
        spec: dict[str, Any] = {}
        if i < len(v1.param):
            spec["name"] = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec["share_mode"] = ParamSpec.DimCheckMode[v1.blob_share_mode[i].name]
        if i < len(v1.blobs_lr):
            spec["lr_mult"] = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec["decay_mult"] = v1.weight_decay[i]
        specs.append(make(ParamSpec, _loc=_param_loc(v1, i), **spec))
    return tuple(specs)


def _param_loc(v1: V1LayerParameter, i: int) -> Any:
    for name in _PARAM_SOURCES:
        if i < len(getattr(v1, name)):
            return loc_of(v1, name, i)
    return loc_of(v1)
