"""asc-deploy: Application Specific Compression of encoders into measured ONNX artifacts."""

__version__ = "0.1.0"
