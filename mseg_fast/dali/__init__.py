"""NVIDIA DALI pipelines: decode, augment and batch shards (CPU and GPU variants of one graph).

The only package that imports `nvidia.dali`; `mseg_fast` reaches it through one lazy adapter,
mseg_fast/loader.py.
"""
