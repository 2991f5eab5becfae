from setuptools import find_packages, setup

# Each is tools/<name>.py with a main(argv=None) -> exit status; installed as the console script mseg-<name>.
COMMANDS = ["shard", "train", "evaluate", "predict", "export_weights", "show_batch", "bench_loader", "bench_shard",
            "bench_step", "bench_eval", "gpu_check", "demo", "make_demo", "summarize"]

setup(
    name="mseg-fast",
    version="0.1.0",
    description="High-throughput multi-dataset semantic segmentation training (MSeg successor)",
    # tools/ (the commands) and config/ (the shipped recipes) stay where a checkout has them; installed, they
    # are mseg_fast.tools and mseg_fast/recipes/, so nothing needs a checkout.
    packages=find_packages(include=["mseg_fast", "mseg_fast.*"]) + ["mseg_fast.tools", "mseg_fast.recipes"],
    package_dir={"mseg_fast.tools": "tools", "mseg_fast.recipes": "config"},
    package_data={"mseg_fast.recipes": ["*/*.yaml"]},
    entry_points={"console_scripts": [f"mseg-{name.replace('_', '-')} = mseg_fast.tools.{name}:main" for name in COMMANDS]},
    python_requires=">=3.10",
    # Loose here; requirements.txt holds the exact pins that are tested. torch is left to the
    # user's platform (CPU or CUDA build); DALI is optional so that `import mseg_fast` works
    # where DALI cannot be installed (macOS, no CUDA).
    install_requires=["numpy", "pyyaml", "pillow", "opencv-python-headless", "webdataset", "tqdm", "tensorboard", "torch"],
    # DALI's wheels are built per CUDA major version: pick the one of your driver's CUDA (docs/gpu.md).
    extras_require={"dali": ["nvidia-dali-cuda120>=2.4,<2.5"], "dali-cu13": ["nvidia-dali-cuda130>=2.4,<2.5"],
                    "test": ["pytest"]},
)
