"""netdef: a Caffe-style declarative network compiler.

Pipeline stages, one package each: ``syntax`` → ``ir`` → ``analysis`` → ``lowering``
→ ``training``, plus ``layers`` (the registry every stage consults), ``render``,
``io`` (caffemodel/LMDB/HDF5) and ``cli``.  Importing netdef never imports torch.
"""
__version__ = "0.1.0"
