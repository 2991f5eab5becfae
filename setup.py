from setuptools import find_packages, setup

setup(
    name="mseg-fast",
    version="0.1.0",
    description="High-throughput multi-dataset semantic segmentation training (MSeg successor)",
    packages=find_packages(include=["mseg_fast", "mseg_fast.*", "pipelines", "pipelines.*"]),
    python_requires=">=3.10",
    # Loose here; requirements.txt holds the exact pins that are tested. torch is left to the
    # user's platform (CPU or CUDA build); DALI is optional so that `import mseg_fast` works
    # where DALI cannot be installed (macOS, no CUDA).
    install_requires=["numpy", "pyyaml", "pillow", "opencv-python-headless", "webdataset", "tqdm", "tensorboard", "torch"],
    # DALI's wheels are built per CUDA major version: pick the one of your driver's CUDA (README).
    extras_require={"dali": ["nvidia-dali-cuda120>=2.4,<2.5"], "dali-cu13": ["nvidia-dali-cuda130>=2.4,<2.5"],
                    "test": ["pytest"]},
)
