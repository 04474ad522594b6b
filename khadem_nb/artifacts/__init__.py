"""The artifact store: large values and files of jobs, kept beside the queue by content.

``refs`` (what a record keeps), ``store`` (content-addressed objects on fsspec), ``offload``
(which values go there), ``opening`` (which store a queue uses).
"""

from .refs import ArtifactRef, FileArtifact, artifact
from .store import ArtifactStore, load, stores

__all__ = ["ArtifactRef", "ArtifactStore", "FileArtifact", "artifact", "load", "stores"]
