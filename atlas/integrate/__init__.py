"""Integrate the store into a reference atlas: HVGs, scVI/scANVI, graph, scib metrics, bundle.

Public API (imported lazily, so ``import atlas.integrate`` loads neither torch, scvi-tools,
scanpy nor JAX):

* :func:`integrate_store` - store -> reference bundle (:class:`IntegrateResult`)
* :class:`IntegrateSettings` - the stage's settings (pydantic)
* :func:`select_hvgs`, :func:`train_scvi`, :func:`compute_graph`, :func:`integration_metrics` - the steps
* :class:`FastDataModule` - the on-device data path for ``model.train(datamodule=...)``
"""

import lazy_loader as lazy

# the public names are the imports of __init__.pyi, loaded on first use (SPEC 1)
__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
