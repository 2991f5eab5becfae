"""mseg-fast: a fast, data-pipeline-centric trainer for multi-dataset semantic segmentation.

Importing this package never imports NVIDIA DALI; only `pipelines/` does, behind one adapter.
"""

__version__ = "0.1.0"
