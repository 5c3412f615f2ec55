"""CARE restoration as part of the product: train on a store, apply to real images, export to bioimage.io.

    factory care train --store pairs.zarr --out care.safetensors
    factory care apply widefield.tif --model care.safetensors --out restored.tif
    factory evaluate restored.tif --reference sr.tif

Modules, in the order data flows: ``network`` (the residual U-Net), ``transform`` (LR -> network
input: the one normalization and upsampling shared by training and apply), ``train`` (resumable,
streamed, held-out PSNR and FRC), ``checkpoint`` (one safetensors file), ``apply`` (resample,
tile and blend), ``bioimageio`` (model package export).
"""
