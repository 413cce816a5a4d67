import subprocess
import sys


def test_import_atlas_integrate_stays_light():
    code = (
        "import sys, atlas, atlas.integrate as ai; ai.IntegrateSettings(); "
        "heavy = [m for m in ('torch', 'scvi', 'scanpy', 'jax', 'anndata', 'lightning', 'matplotlib', "
        "'scib_metrics', 'harmonypy', 'rapids_singlecell', 'cupy') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports_resolve():
    import atlas.integrate as ai

    for name in ai.__all__:
        assert getattr(ai, name) is not None
