"""Tools: signature scoring (scanpy / AUCell / UCell / mean) and the signature catalogue.

Public functions are loaded on first attribute access, so ``import atlas.score`` does not import
numba, cupy or dask.
"""

import lazy_loader as lazy

# the public names are the imports of __init__.pyi, loaded on first use (SPEC 1)
__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
