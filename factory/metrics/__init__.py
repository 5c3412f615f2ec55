"""Image-quality metrics shared by ``factory evaluate`` and CARE validation.

``frc`` (Fourier ring correlation, the 1/7 resolution criterion; checked against the analytic
curve of blurred white noise in tests/test_evaluate.py) and ``register`` (sub-pixel shift by
upsampled phase correlation, removed by the Fourier shift theorem). :mod:`factory.evaluate`
puts them together for two image files.
"""
