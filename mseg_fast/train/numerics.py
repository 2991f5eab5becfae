"""How the trainer's floating point is set up on the device: fp32 as MSeg's (no TF32) unless asked,
cuDNN's kernel search for the fixed crop size, deterministic kernels on request."""

from __future__ import annotations

import os

import torch


def set_numerics(tf32: bool, deterministic: bool) -> str:
    """Set the process's matmul and convolution precision and algorithm choice; returns a log line.

    - fp32 math: PyTorch lets cuDNN run fp32 convolutions as TF32 (10-bit mantissa) on Ampere and Hopper by
      default. MSeg trained in true fp32 on V100s, so `tf32: false` (the default) asks for IEEE fp32 in
      convolutions and matmuls; `tf32: true` is faster and is what most PyTorch code gets without asking.
    - cuDNN benchmark: training crops have one size, so searching once for the fastest kernels pays off.
    - `deterministic: true`: deterministic cuDNN and cuBLAS kernels and no benchmark search (slower; not
      measured here). PyTorch has no deterministic CUDA kernel for bilinear upsampling's backward, which
      HRNet's head uses: it warns once and stays atomic, so two CUDA runs can still differ in the last bits.
    """
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, set before its first use (this is called first).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return (f"numerics: fp32 math {'TF32' if tf32 else 'IEEE fp32 (no TF32, as MSeg)'}, "
            + ("deterministic kernels (bilinear upsampling's backward excepted on CUDA)" if deterministic
               else "cuDNN picks its fastest kernels for the crop size (not deterministic)"))
