"""Shared fixtures: the shipped models' manifest and frames of the bundled real video."""

from __future__ import annotations

import pytest

from edge.runtime import Manifest, load_manifest


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    """The models' manifest (``$EDGE_POSE_MODELS`` or the shipped ``models/``)."""
    return load_manifest()
