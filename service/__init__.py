"""resnet-serve's inference service: FastAPI + dynamic batching onto ONNX Runtime sessions.

Reads only the model repository (``model_repository``): never imports torch, ``training`` or ``export``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnet-serve")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.1.0"
