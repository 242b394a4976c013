"""Several cameras, one skeleton: multi-view fusion of the devices' 2D poses.

Pure parts: :mod:`~edge.fuse.calib` (cameras), :mod:`~edge.fuse.views` (annotation payloads),
:mod:`~edge.fuse.sync` (grouping by capture time), :mod:`~edge.fuse.triangulate` (geometry),
:mod:`~edge.fuse.fuser` (association, triangulation, identities, smoothing). I/O:
:mod:`~edge.fuse.offline` (annotation files), :mod:`~edge.fuse.cli` (commands).
"""
