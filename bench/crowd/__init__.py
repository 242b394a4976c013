"""A labelled crowd benchmark built by a script: real people pasted onto real empty backgrounds.

``python -m bench.crowd.generate`` builds the frames, clips and ``gt.json``;
``python -m bench.crowd.score`` scores edge-pose's outputs against them. See README.md here.
"""
