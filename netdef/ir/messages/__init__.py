"""Netdef's model of caffe.proto: one frozen dataclass per message.

Import messages from here; the submodules only group them by topic.
"""
from netdef.ir.messages.common import *  # noqa: F401,F403
from netdef.ir.messages.layer_params import *  # noqa: F401,F403
from netdef.ir.messages.legacy import *  # noqa: F401,F403
from netdef.ir.messages.layer import LayerParameter  # noqa: F401
from netdef.ir.messages.net import NetParameter  # noqa: F401
from netdef.ir.messages.solver import *  # noqa: F401,F403
