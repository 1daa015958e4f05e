"""Adding a model family is adding one adapter module; adding a method is adding one method module."""

import sys
import textwrap

import pytest

import stepcache
from stepcache import adapters, methods, support

FAMILY_MODULE = '''
from torch import nn
from stepcache.adapters.base import BLOCKS, DIT, Adapter


class Toy(nn.Module):
    pass


class ToyAdapter(Adapter):
    family = "toy_family"
    model_classes = (Toy,)
    capabilities = frozenset({DIT, BLOCKS})
'''

METHOD_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar

from stepcache.adapters import BLOCKS
from stepcache.methods import register
from stepcache.methods.base import CacheConfig


@register
@dataclass(frozen=True)
class ToyMethodConfig(CacheConfig):
    method: ClassVar[str] = "toy_method"
    requires: ClassVar[frozenset[str]] = frozenset({BLOCKS})
'''


@pytest.fixture
def package_module(tmp_path, monkeypatch):
    """Writes a module into a folder searched as part of a stepcache package; removes what it registered."""
    written = []

    def write(package, name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
        written.append(f"{package.__name__}.{name}")
        return [str(tmp_path)]

    yield write
    for name in written:
        sys.modules.pop(name, None)
    methods.METHODS.pop("toy_method", None)


def test_an_adapter_module_is_a_family(package_module):
    path = package_module(adapters, "toy_family", FAMILY_MODULE)
    (found,) = adapters.discover(path)
    assert found.family == "toy_family" and found.__name__ == "ToyAdapter"


def test_a_method_module_is_a_method(package_module):
    methods.import_methods(package_module(methods, "toy_method", METHOD_MODULE))
    config_class = methods.METHODS["toy_method"]
    assert stepcache.ToyMethodConfig is config_class  # public at the package top, found in the registry
    del stepcache.ToyMethodConfig  # the lookup cached it
    # it runs on every family offering what it requires: the block-chain families, not U-Nets or Latte
    families = support.families_for(config_class)
    assert "wan" in families and "generic" in families and "unet" not in families and "latte" not in families
