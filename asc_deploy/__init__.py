"""asc-deploy: Application Specific Compression of transformer encoders into measured ONNX artifacts."""

__version__ = "0.1.0"
