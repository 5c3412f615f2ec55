"""Structure sources: where a run's HR densities come from (ddpm | simulate | images), one interface.

    from factory.structures import StructureConfig, StructureKind, resolve, open_source
"""
from factory.structures.config import Resolved, StructureConfig, StructureKind, resolve
from factory.structures.sources import open_source

__all__ = ["Resolved", "StructureConfig", "StructureKind", "open_source", "resolve"]
