"""Lowering: turn the analysed IR into PyTorch.

``netdef.lowering.ops`` (re-exported by ``netdef.lowering.functional``) holds pure-torch
functions that compute exactly what Caffe's CPU layers compute; the nn.Module wrappers
are built on top of them.  This package's ``__init__`` imports nothing, so importing
netdef never imports torch.
"""
