"""FHAvatar training: dataset format and loading, preprocessing, synthetic data, losses and the training script.

Run from the repository root with `PYTHONPATH=.` (the `training` folder is not part of the installed package).
"""
