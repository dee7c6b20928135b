"""Caffe's ``UpgradeNetAsNeeded``: every legacy net form → the current ``layer { }`` form.

The steps run in Caffe's order, each only when its check says the net needs it, and
each appends the lines Caffe logs (without glog's prefix) to ``log``:

1. V0 → V1 (:mod:`.v0`), 2. transformation fields → ``transform_param``,
3. V1 → current (:mod:`.v1`), 4. top-level ``input``/``input_dim``/``input_shape`` → an
``Input`` layer named ``input``, 5. BatchNorm layers with three ``param`` specs get
``lr_mult: 0`` and ``decay_mult: 0`` on each (what Caffe does since BVLC/caffe#5184;
the specs, with their names, are kept).

Where Caffe would crash (LOG(FATAL)/CHECK) or knowingly build a broken net, netdef
raises :class:`~netdef.errors.UpgradeError` at the offending line instead.
"""
from __future__ import annotations

from netdef.errors import UpgradeError
from netdef.ir.messages import BlobShape, InputParameter, LayerParameter, NetParameter
from netdef.ir.schema import loc_of, make, update
from netdef.ir.upgrade.common import source_name
from netdef.ir.upgrade.v0 import needs_v0_upgrade, upgrade_v0_net
from netdef.ir.upgrade.v1 import (mixed_layers_error, needs_data_upgrade, needs_v1_upgrade,
                                  upgrade_data_transformation, upgrade_v1_net)

# The lines Caffe logs (glog prefix removed); "{}" is the file name.
V0_ATTEMPT = "Attempting to upgrade input file specified using deprecated V0LayerParameter: {}"
V0_DONE = "Successfully upgraded file specified using deprecated V0LayerParameter"
V0_PROBLEMS = ("Warning: had one or more problems upgrading V0NetParameter to NetParameter "
               "(see above); continuing anyway.")
V0_NOTE = ("Note that future Caffe releases will not support V0NetParameter; use "
           "./build/tools/upgrade_net_proto_text for prototxt and "
           "./build/tools/upgrade_net_proto_binary for model weights upgrade this and any "
           "other net protos to the new format.")
DATA_ATTEMPT = ("Attempting to upgrade input file specified using deprecated transformation "
                "parameters: {}")
DATA_DONE = ("Successfully upgraded file specified using deprecated data transformation "
             "parameters.")
DATA_NOTE = ("Note that future Caffe releases will only support transform_param messages for "
             "transformation fields.")
V1_ATTEMPT = "Attempting to upgrade input file specified using deprecated V1LayerParameter: {}"
V1_DONE = "Successfully upgraded file specified using deprecated V1LayerParameter"
INPUT_ATTEMPT = "Attempting to upgrade input file specified using deprecated input fields: {}"
INPUT_DONE = "Successfully upgraded file specified using deprecated input fields."
INPUT_NOTE = "Note that future Caffe releases will only support input layers and not input fields."
BN_ATTEMPT = "Attempting to upgrade batch norm layers using deprecated params: {}"
BN_DONE = "Successfully upgraded batch norm layers using deprecated params."


def net_needs_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsUpgrade: would :func:`upgrade_net` change anything?"""
    return (needs_v0_upgrade(net) or needs_data_upgrade(net) or needs_v1_upgrade(net)
            or needs_input_upgrade(net) or needs_batch_norm_upgrade(net))


def upgrade_net(net: NetParameter, *, log: list[str] | None = None,
                file: str | None = None, strict: bool = True) -> NetParameter:
    """The current-format net Caffe makes of ``net`` (unchanged if already current).

    ``log`` receives Caffe's upgrade log lines; ``file`` is the file name they name
    (default: the file ``net`` was parsed from).  With ``strict=False`` a V0 field that
    its layer type cannot take is dropped with Caffe's error line instead of raising.
    """
    out = log if log is not None else []
    file = file if file is not None else source_name(net)
    if net.layer and net.layers:
        raise mixed_layers_error(net)
    if needs_v0_upgrade(net):
        out.append(V0_ATTEMPT.format(file))
        problems: list[str] = []
        net = upgrade_v0_net(net, problems, strict=strict)
        out.extend(problems)
        out.append(V0_PROBLEMS if problems else V0_DONE)
        out.append(V0_NOTE)
    if needs_data_upgrade(net):
        out.append(DATA_ATTEMPT.format(file))
        net = upgrade_data_transformation(net)
        out.extend([DATA_DONE, DATA_NOTE])
    if needs_v1_upgrade(net):
        out.append(V1_ATTEMPT.format(file))
        net = upgrade_v1_net(net)
        out.append(V1_DONE)
    if needs_input_upgrade(net):
        out.append(INPUT_ATTEMPT.format(file))
        net = upgrade_input(net)
        out.extend([INPUT_DONE, INPUT_NOTE])
    if needs_batch_norm_upgrade(net):
        out.append(BN_ATTEMPT.format(file))
        net = upgrade_batch_norm(net)
        out.append(BN_DONE)
    return net


def needs_input_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsInputUpgrade: the net names top-level ``input`` blobs."""
    return len(net.input) > 0


def upgrade_input(net: NetParameter) -> NetParameter:
    """Caffe's UpgradeNetInput: one ``Input`` layer named ``input``, placed first.

    With neither ``input_shape`` nor ``input_dim`` (a legacy caffemodel) the inputs
    are only removed, as Caffe does.
    """
    if net.input_shape or net.input_dim:
        layer = make(LayerParameter, _loc=loc_of(net, "input"), name="input", type="Input",
                     top=net.input, input_param=make(InputParameter, shape=_input_shapes(net)))
        net = update(net, layer=(layer,) + net.layer)
    return update(net, input=None, input_shape=None, input_dim=None)


def _input_shapes(net: NetParameter) -> tuple[BlobShape, ...]:
    """One shape per input: ``input_shape`` if given (Caffe prefers it), else 4 dims each."""
    n = len(net.input)
    if net.input_shape:
        if len(net.input_shape) != n:
            raise UpgradeError(
                f"{n} input(s) but {len(net.input_shape)} input_shape(s)",
                loc=loc_of(net, "input_shape"), hint="give one input_shape per input")
        return net.input_shape
    if len(net.input_dim) != 4 * n:
        raise UpgradeError(
            f"{n} input(s) need {4 * n} input_dim values, got {len(net.input_dim)}",
            loc=loc_of(net, "input_dim"),
            hint="input_dim gives exactly 4 dims (N C H W) per input; use input_shape "
                 "for other ranks")
    dims = net.input_dim
    return tuple(make(BlobShape, dim=dims[4 * i:4 * i + 4]) for i in range(n))


def _is_old_batch_norm(layer: LayerParameter) -> bool:
    return layer.type == "BatchNorm" and len(layer.param) == 3


def needs_batch_norm_upgrade(net: NetParameter) -> bool:
    """Caffe's NetNeedsBatchNormUpgrade: a BatchNorm layer declares three param specs."""
    return any(_is_old_batch_norm(layer) for layer in net.layer)


def upgrade_batch_norm(net: NetParameter) -> NetParameter:
    """Caffe's UpgradeNetBatchNorm: zero lr_mult and decay_mult, keep names/share modes.

    BatchNorm's three blobs are running statistics, not learned; Caffe's layer then
    CHECKs that every declared spec has lr_mult 0.
    """
    layers = []
    for layer in net.layer:
        if _is_old_batch_norm(layer):
            layer = update(layer, param=[update(p, lr_mult=0.0, decay_mult=0.0)
                                         for p in layer.param])
        layers.append(layer)
    return update(net, layer=layers)
