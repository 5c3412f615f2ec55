"""OME-Zarr (NGFF 0.5) metadata for the store's image groups, so viewers open them at physical scale.

NGFF 0.5 puts an image's metadata in the attributes of a Zarr v3 group, under ``ome``: one
``multiscales`` entry with the axes (name, type, unit) and, per resolution level, the array's path
and its coordinate transformation (here one level, path ``0``, scale in nm per pixel). The sample
axis comes first with a custom type ("sample", allowed where NGFF admits one custom or channel
axis before the space axes); y and x are space axes in nanometers. Validated in the tests with
``ome-zarr-models`` (``ome_zarr_models.v05.image.Image``). See https://ngff.openmicroscopy.org/0.5/.
"""
from __future__ import annotations

NGFF_VERSION = "0.5"


def image_attributes(name: str, pixel_nm: float) -> dict:
    """The ``ome`` group attributes of an (N, H, W) image array at path ``0`` with ``pixel_nm`` pixels."""
    axes = [{"name": "sample", "type": "sample"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, float(pixel_nm), float(pixel_nm)]}]}
    return {"version": NGFF_VERSION, "multiscales": [{"name": name, "axes": axes, "datasets": [dataset]}]}
