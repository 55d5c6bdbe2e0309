"""Class-conditional GLOW (Sections 2.1, 5, 6.1 and Appendix A of the paper).

Public API: :func:`build_model`, :func:`load`, :class:`ConditionalGlow`, the presets. The
``flows.attacks`` subpackage is imported on its own (``import flows.attacks``).
"""

from flows.model import ConditionalGlow, ModelConfig, build_model, load
from flows.presets import PRESETS, Preset, get_preset
from flows.variants import VARIANTS, Variant

__all__ = [
    "PRESETS",
    "VARIANTS",
    "Variant",
    "ConditionalGlow",
    "ModelConfig",
    "Preset",
    "build_model",
    "get_preset",
    "load",
]
