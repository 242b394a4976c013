"""Offline build of the 3D lifter: data, training, TFLite export and evaluation (not shipped)."""
