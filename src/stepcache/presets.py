"""The settings each method's authors published, as named configs: ``stepcache.presets.get("deepcache-sd15")``.

Every preset follows its reference code (``convention="reference"``), so it reproduces the
published schedule; ``get(name, **changes)`` returns it with fields changed (e.g.
``convention="stepcache"``, or a ``threshold``). ``steps`` is the run length each was
published for: the schedules of DeepCache, T-GATE and AdaCache are tuned to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .methods.adacache import AdaCacheConfig
from .methods.base import CacheConfig
from .methods.deepcache import DeepCacheConfig
from .methods.fora import FORAConfig
from .methods.teacache import TeaCacheConfig
from .methods.tgate import TGateConfig

REFERENCE = "reference"

# TeaCache4FLUX's polynomial (TeaCache repository, TeaCache4FLUX/teacache_flux.py), highest degree first
TEACACHE_FLUX_COEFFICIENTS = (4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01)


@dataclass(frozen=True)
class Preset:
    config: CacheConfig
    steps: int  # the number of denoising steps it was published with
    source: str  # where it is published


def _teacache_flux(threshold: float, speedup: str) -> Preset:
    return Preset(TeaCacheConfig(threshold=threshold, coefficients=TEACACHE_FLUX_COEFFICIENTS, convention=REFERENCE),
                  28, f"TeaCache4FLUX (FLUX.1-dev), rel_l1_thresh {threshold}: about {speedup} faster")


PRESETS: dict[str, Preset] = {
    "deepcache-sd15": Preset(
        DeepCacheConfig(interval=5, branch=0, layer=0, schedule="non-uniform", center=15, power=1.4,
                        convention=REFERENCE),
        50, "DeepCache (Stable Diffusion 1.5): N=5, non-uniform around step 15, power 1.4, cache_branch_id 0"),
    "tgate-sdxl": Preset(
        TGateConfig(gate_step=10, self_attn_interval=5, self_attn_warmup=2, self_attn_interval_after_gate=1,
                    convention=REFERENCE),
        25, "T-GATE README (SDXL): gate_step 10, sp_interval 5, fi_interval 1, warm_up 2"),
    "tgate-pixart": Preset(
        TGateConfig(gate_step=15, self_attn_interval=3, self_attn_warmup=2, self_attn_interval_after_gate=1,
                    convention=REFERENCE),
        25, "T-GATE README (PixArt-α and PixArt-Σ): gate_step 15, sp_interval 3, fi_interval 1, warm_up 2"),
    "fora-dit": Preset(
        FORAConfig(interval=3, convention=REFERENCE),
        250, "FORA README (DiT-XL/2): cache threshold (interval) 3 over 250 DDIM steps"),
    "adacache-fast": Preset(
        AdaCacheConfig(codebook=((0.08, 6), (0.16, 5), (0.24, 4), (0.32, 3), (0.40, 2), (1.00, 1)),
                       convention=REFERENCE),
        30, "AdaCache repository (configs/sample_adacache.py), 30-step fast codebook"),
    "adacache-slow": Preset(
        AdaCacheConfig(codebook=((0.08, 3), (0.16, 2), (0.24, 1), (0.32, 1), (0.40, 1), (1.00, 1)),
                       convention=REFERENCE),
        30, "AdaCache repository (configs/sample_adacache.py), 30-step slow codebook"),
    "adacache-100": Preset(
        AdaCacheConfig(codebook=((0.03, 12), (0.05, 10), (0.07, 8), (0.09, 6), (0.11, 4), (1.00, 3)),
                       convention=REFERENCE),
        100, "AdaCache repository (configs/sample_adacache.py), 100-step codebook"),
    # its moreg_steps (10, 90) count from 1; moreg_hyp (0.385, 8, 1) and mograd_mul 10 are the field defaults
    "adacache-moreg-100": Preset(
        AdaCacheConfig(codebook=((0.03, 12), (0.05, 10), (0.07, 8), (0.09, 6), (0.11, 4), (1.00, 3)),
                       moreg=True, moreg_window=(9, 89), convention=REFERENCE),
        100, "AdaCache repository (configs/sample_adacache_moreg.py), 100-step codebook with motion "
             "regularisation (video models)"),
    "teacache-flux-0.25": _teacache_flux(0.25, "1.5x"),
    "teacache-flux-0.4": _teacache_flux(0.4, "1.8x"),
    "teacache-flux-0.6": _teacache_flux(0.6, "2.0x"),
    "teacache-flux-0.8": _teacache_flux(0.8, "2.25x"),
}


def names() -> list[str]:
    return sorted(PRESETS)


def get(name: str, **changes) -> CacheConfig:
    """The config of preset ``name``, with ``changes`` to its fields; ValueError listing the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(names())}")
    return dataclasses.replace(PRESETS[name].config, **changes)
