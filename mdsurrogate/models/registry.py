"""Imports every model module so that each registers itself; ``build_model`` lives in ``base``."""

from . import baselines, eghn, egnn, gmn, gnn, radial_field, segnn, tfn  # noqa: F401
from .base import MODELS, build_model  # noqa: F401
