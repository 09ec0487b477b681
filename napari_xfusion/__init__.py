"""napari-xfusion: spatio-temporal fusion of dual-camera high-speed x-ray image sequences."""

__version__ = "0.1.0"
