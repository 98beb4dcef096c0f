"""A stand-in for torchvision, on sys.path for benchmarks/zoo/build.py only.

PyPI's torchvision does not import beside torch 2.13.0, and timm imports a few of its names at
module load (FrozenBatchNorm2d, transforms.InterpolationMode, datasets) though building a model
and exporting it uses none of them. Every `torchvision.*` module and attribute here is an inert
placeholder class; calling anything from it raises, so a real use cannot pass silently.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _Meta(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")


def _placeholder(name: str) -> type:
    def fail(*_a: object, **_k: object) -> None:
        raise RuntimeError(f"torchvision stub: {name} is not available (benchmarks/zoo/stubs)")

    return _Meta(name, (), {"__init__": fail, "__qualname__": name})


class _Module(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None):  # noqa: ANN201
        if fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        m = _Module(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module: types.ModuleType) -> None:
        pass


sys.meta_path.insert(0, _Finder())
__version__ = "0.0.0+stub"
__path__ = list(__path__)  # noqa: F821  (a package, so `import torchvision.x` reaches the finder)
