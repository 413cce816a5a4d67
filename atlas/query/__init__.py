"""Map a new data set onto the reference atlas: scArches surgery, label transfer with uncertainty,
placement on the reference UMAP, the reference's scores and reprogramming index, and a report.

``map_query(refdir, query, out)`` is the Python API of ``atlas query REFDIR QUERY --out DIR``; the
steps are in :mod:`~atlas.query.reference`, :mod:`~atlas.query.inputs`, :mod:`~atlas.query.prepare`,
:mod:`~atlas.query.mapping`, :mod:`~atlas.integrate.label_transfer`, :mod:`~atlas.query.compare` and
:mod:`~atlas.query.report`. Names are imported on first use, so ``import atlas.query`` stays light.
"""

import lazy_loader as lazy

# the public names are the imports of __init__.pyi, loaded on first use (SPEC 1)
__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
