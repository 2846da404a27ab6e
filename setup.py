"""Build script of caffelrp.

The package metadata lives here (not in pyproject.toml) because the Cython extensions are
generated from ``src/<name>.pyx`` at build time; pyproject.toml only names the build backend.

Every ``src/<name>.pyx`` becomes the extension module ``caffelrp.kernels.<name>``, compiled and
linked with ``-O3 -fopenmp``. The kernels use typed memoryviews; only ``arena`` (the allocator of
``caffelrp/memory.py``) uses numpy's C API, so numpy's headers are needed at build time.
"""

import glob
import os
import re

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """Return ``__version__`` from caffelrp/__init__.py without importing the package."""
    path = os.path.join(HERE, "caffelrp", "__init__.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    if m is None:
        raise RuntimeError("cannot find __version__ in %s" % path)
    return m.group(1)


def kernel_extensions():
    compile_args = ["-O3", "-fopenmp"]
    link_args = ["-fopenmp"]
    exts = []
    # Relative paths: setuptools wants sources relative to setup.py.
    for pyx in sorted(glob.glob(os.path.join("src", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        exts.append(
            Extension(
                "caffelrp.kernels." + name,
                sources=[pyx],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                libraries=["m"],  # the current powf, not glibc's slow compat symbol
            )
        )
    return cythonize(
        exts,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "language_level": 3,
        },
    )


# setup.py may be run from another directory (e.g. `python /path/setup.py build_ext`).
os.chdir(HERE)

setup(
    name="caffelrp",
    version=read_version(),
    description="Run Caffe 1.0 models on CPU without Caffe and compute gradients and LRP relevance",
    # The bundled model definitions (models/) are installed as caffelrp/models.
    packages=find_packages(include=["caffelrp", "caffelrp.*"]) + ["caffelrp.models"],
    package_dir={"caffelrp.models": "models"},
    package_data={"caffelrp": ["proto/*.py"],
                  "caffelrp.models": ["*/*.prototxt", "*/*.caffemodel", "*/*.txt", "*/*.png"]},
    include_package_data=False,
    ext_modules=kernel_extensions(),
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "pillow>=9",
        "protobuf>=7.35.1,<8",
        "threadpoolctl>=3.1",   # thread counts of the OpenBLAS pools (caffelrp/threads.py)
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "opencv-python-headless<5",
            "grpcio-tools",
            "matplotlib>=3.6",
            "scikit-image>=0.19",
            "dask[distributed]",
            # the coverage-guided engine of caffelrp.fuzz (tests/test_fuzz.py runs it briefly)
            'atheris>=2.3; platform_system == "Linux"',
        ],
        # compare --figure, evaluate's curves.png, any matplotlib colour map by name
        "plot": ["matplotlib>=3.6"],
        "ssim": ["scikit-image>=0.19"],       # compare's SSIM from scikit-image (else our own)
        "dask": ["dask[distributed]"],        # explain / -c -f --dask
        # benchmarks/ only: the peers of bench_peers.py and bench_forward.py's OpenCV (never
        # imported by the package; install them in a separate venv, see BENCHMARKS.md)
        "bench": ["torch", "captum", "zennit", "opencv-python-headless<5"],
    },
    zip_safe=False,
)
