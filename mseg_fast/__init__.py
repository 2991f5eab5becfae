"""mseg-fast: a fast, data-pipeline-centric trainer for multi-dataset semantic segmentation.

Importing this package never imports NVIDIA DALI; only `mseg_fast/dali/` does, behind one adapter.
"""

__version__ = "0.1.0"


def load_model(path):
    """A trained HRNet from an MSeg release file or an mseg-fast checkpoint, in eval mode.

    Its forward takes normalised NCHW images and returns logits at the input resolution.
    """
    from mseg_fast.models.load import load_model as _load  # torch only when asked for

    return _load(path)
