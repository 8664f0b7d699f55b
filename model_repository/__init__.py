"""The model-repository contract shared by the exporter and the service: schema, layout, preprocessing."""

from .layout import list_model_names, list_versions, publish, staging_directory, version_dir
from .manifest import (
    MANIFEST_FILE,
    Golden,
    InputSpec,
    Manifest,
    ManifestError,
    OutputSpec,
    Preprocess,
    read_manifest,
    sha256_file,
    verify_files,
)

__all__ = [
    "MANIFEST_FILE",
    "Golden",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "OutputSpec",
    "Preprocess",
    "list_model_names",
    "list_versions",
    "publish",
    "read_manifest",
    "sha256_file",
    "staging_directory",
    "verify_files",
    "version_dir",
]
