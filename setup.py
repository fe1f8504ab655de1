"""Build the Cython extensions in rayfast/_core against the C core in csrc/.

Every rayfast/_core/<name>.pyx becomes the extension rayfast._core.<name>;
the C sources it needs are listed in C_SOURCES so the extensions stay small.
RAYFAST_SANITIZE=1 builds with ASan/UBSan (run Python with the ASan runtime
preloaded); RAYFAST_DEBUG=1 builds without optimisation.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# Which C files each extension links; a module absent here links none.
C_SOURCES = {
    "ids": ["csrc/ids.c", "csrc/idtable.c", "csrc/hash.c"],
    "queue": ["csrc/queue.c"],
    "deps": ["csrc/deps.c", "csrc/idtable.c", "csrc/hash.c"],
    "lineage": ["csrc/lineage.c", "csrc/idtable.c", "csrc/hash.c"],
    "store": ["csrc/store.c", "csrc/memcopy.c", "csrc/hash.c"],
    "spin": ["csrc/spin.c"],
}

cflags = ["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wno-unused-function"]
ldflags = ["-lrt", "-lpthread"]
if os.environ.get("RAYFAST_DEBUG"):
    cflags = ["-O0", "-g", "-std=c11", "-D_GNU_SOURCE"]
if os.environ.get("RAYFAST_SANITIZE"):
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    ldflags += ["-fsanitize=address,undefined"]


def extensions():
    exts = []
    for pyx in sorted(glob.glob(os.path.join(HERE, "rayfast", "_core", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        sources = [os.path.relpath(pyx, HERE)] + [
            s for s in C_SOURCES.get(name, []) if os.path.exists(os.path.join(HERE, s))
        ]
        exts.append(
            Extension(
                f"rayfast._core.{name}",
                sources=sources,
                include_dirs=["csrc"],
                extra_compile_args=cflags,
                extra_link_args=ldflags,
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "embedsignature": True},
    )
)
