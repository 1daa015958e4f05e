"""stepcache: training-free caching across denoising steps for Hugging Face diffusers models.

    handle = stepcache.apply(pipe, stepcache.FORAConfig(interval=3))
    images = pipe(...).images
    print(handle.stats())
    handle.remove()
"""

from .adapters import UnsupportedModelError
from .api import CacheHandle, apply, cached
from .methods import METHODS, CacheConfig
from .methods.fora import FORAConfig
from .methods.delta_dit import DeltaDiTConfig
from .methods.teacache import TeaCacheConfig
from .calibration import calibrate
from .methods.deepcache import DeepCacheConfig
from .methods.tgate import TGateConfig
from .methods.adacache import AdaCacheConfig

__version__ = "0.1.0"

__all__ = ["METHODS", "CacheConfig", "CacheHandle", "DeepCacheConfig", "TeaCacheConfig", "UnsupportedModelError", "apply", "cached", "calibrate", "FORAConfig", "DeltaDiTConfig", "TGateConfig", "AdaCacheConfig"]
