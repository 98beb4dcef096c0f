"""Float SNN -> integer SNN for a target profile, with a range proof."""

from spikeport.quantize.profiles import PROFILES, Profile, get_profile, register_profile
from spikeport.quantize.quantize import DEFAULT_MAX_TIMESTEPS, quantize

__all__ = [
    "DEFAULT_MAX_TIMESTEPS",
    "PROFILES",
    "Profile",
    "get_profile",
    "quantize",
    "register_profile",
]
