"""Pure-torch functions computing exactly what Caffe's CPU layers compute (float32,
Caffe's parameter semantics), for the nn.Module wrappers to call.  One module per
family; everything is re-exported here."""
from .activation import *  # noqa: F401,F403
from .activation import __all__ as _a
from .conv import *  # noqa: F401,F403
from .conv import __all__ as _c
from .loss import *  # noqa: F401,F403
from .loss import __all__ as _l
from .lrn import *  # noqa: F401,F403
from .lrn import __all__ as _r
from .normalization import *  # noqa: F401,F403
from .normalization import __all__ as _n
from .pooling import *  # noqa: F401,F403
from .pooling import __all__ as _p
from .recurrent import *  # noqa: F401,F403
from .recurrent import __all__ as _rc
from .tensor import *  # noqa: F401,F403
from .tensor import __all__ as _t

__all__ = [*_a, *_c, *_l, *_r, *_n, *_p, *_rc, *_t]
