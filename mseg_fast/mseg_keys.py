"""MSeg's own training configs (mseg-semantic's config/train/...): their keys onto this project's.

Most keys have the same name and meaning here (dataset, universal, use_naive_taxonomy, use_mgda,
dataset_gpu_mapping, the augmentation and optimisation keys, batch_size, num_examples, save_path, ...).
The others are mapped, ignored with the reason, or refused where ignoring them would change what is
trained. Each such key gives one line of `notes` (train.py logs them).
"""

from __future__ import annotations

from mseg_fast.errors import UserError

# Keys that only MSeg's configs have: one of them marks a file as MSeg's.
MSEG_ONLY = {"use_apex", "opt_level", "keep_batchnorm_fp32", "loss_scale", "train_gpu", "batch_size_val", "save_freq",
             "weight", "resume", "auto_resume", "evaluate", "epochs", "start_epoch", "dist_url", "dist_backend",
             "multiprocessing_distributed", "world_size", "rank", "sync_bn", "zoom_factor", "use_multiple_datasets",
             "finetune", "tax_version", "init_model_path", "network_name"}

# Ignored: the reason, and what to do instead where there is something.
IGNORED = {
    "keep_batchnorm_fp32": "apex's; torch.amp keeps BatchNorm in fp32",
    "loss_scale": "apex's; the fp16 gradient scaler picks its scale",
    "train_gpu": "one process per GPU comes from torchrun: torchrun --nproc_per_node N "
                 "(CUDA_VISIBLE_DEVICES picks them)",
    "evaluate": "MSeg never validated during training; set val_every to do so",
    "epochs": "MSeg recomputed it from num_examples, as the run length is here",
    "start_epoch": "a resumed run continues from its checkpoint (--resume auto)",
    "dist_url": "torchrun sets the rendezvous", "dist_backend": "NCCL on GPUs, gloo on the CPU",
    "multiprocessing_distributed": "torchrun starts one process per GPU",
    "world_size": "torchrun's --nnodes", "rank": "torchrun's --node_rank",
    "sync_bn": "SyncBatchNorm is used whenever there are several ranks",
    "use_multiple_datasets": "MSeg's script does not read it", "finetune": "MSeg's script does not read it",
    "tax_version": "MSeg's script does not read it", "init_model_path": "MSeg's script does not read it",
    "network_name": "PSPNet's backbone follows `layers` here",
}

_PRECISION = {"O0": "fp32", "O1": "fp16"}


def _set(value) -> bool:
    """Whether an MSeg path-like key holds something (MSeg writes empty keys and the string "None")."""
    return value not in (None, "", "None")


def translate(values: dict) -> tuple[dict, list[str]]:
    """An MSeg config's flattened keys -> this project's, and a note per key that was mapped or ignored.
    A dict without MSeg-only keys is returned as it is, with no notes.

    Raises:
        UserError: a key whose value cannot be carried over (a checkpoint to start from or resume, an
        architecture or apex level this project has not).
    """
    if not MSEG_ONLY & set(values):
        return values, []
    out, notes = dict(values), []

    def note(key: str, text: str) -> None:
        notes.append(f"MSeg key '{key}': {text}")

    for key in sorted(MSEG_ONLY & set(values)):
        if key in IGNORED:
            note(key, f"ignored ({IGNORED[key]})")
            del out[key]
    if "arch" in out:
        arch = {"hrnet": "hrnet_w48", "psp": "psp"}.get(out["arch"], out["arch"])
        if arch == "hrnet_ocr":
            raise UserError("MSeg key 'arch': hrnet_ocr is not in MSeg's code release nor here; use arch: hrnet")
        if arch != out["arch"]:
            note("arch", f"{out['arch']} -> arch {arch}")
        out["arch"] = arch
    if "zoom_factor" in out:
        if out.pop("zoom_factor") != 8:
            raise UserError("MSeg key 'zoom_factor': only 8 (every MSeg config's) is supported: the output stride "
                            "is fixed here")
        note("zoom_factor", "ignored (8: the model's output stride, fixed here)")
    if "batch_size_val" in out:
        out["val_batch_size"] = out.pop("batch_size_val")
        note("batch_size_val", f"-> val_batch_size {out['val_batch_size']}")
    use_apex, level = out.pop("use_apex", None), out.pop("opt_level", None)
    if use_apex is not None or level is not None:
        if "precision" not in out:
            if level in ("O2", "O3"):
                raise UserError(f"MSeg key 'opt_level': {level} keeps fp16 weights, which torch.amp does not; set "
                                f"precision: bf16 (no loss scaling needed) or fp16 (autocast, as O1) instead")
            out["precision"] = _PRECISION.get(level or "O0", "fp32") if use_apex else "fp32"
        note("use_apex/opt_level", f"apex {'on' if use_apex else 'off'}, level {level} -> precision "
                                   f"{out['precision']} (torch.amp; DDP is torch's)")
    gpus = values.get("train_gpu")
    if "workers" in out and out["workers"] is not None:
        if isinstance(gpus, list) and gpus:
            out["workers"] = max(1, int(out["workers"]) // len(gpus))
            note("workers", f"{values['workers']} per node over {len(gpus)} GPUs -> workers {out['workers']} per rank")
        else:
            note("workers", f"{out['workers']}: per rank here (MSeg: per node)")
    if "layers" in out and out["layers"] is None:  # HRNet configs leave PSPNet's depth empty
        del out["layers"]
        note("layers", "empty -> the default (PSPNet's depth; HRNet has none)")
    if "manual_seed" in out and out["manual_seed"] is None:
        out["manual_seed"] = 0
        note("manual_seed", "empty (MSeg: no seeding) -> 0 (runs here are seeded, and resume exactly)")
    if "save_freq" in out:
        note("save_freq", f"{out.pop('save_freq')} epochs of rank 0's dataset -> ignored; checkpoints every "
                          f"save_every iterations ({out.get('save_every', 1000)})")
    for key, instead in (("weight", "--init-from PATH"), ("resume", "--resume PATH"),
                         ("auto_resume", "--resume auto (with the same save_path)")):
        if key in out:
            value = out.pop(key)
            if _set(value):
                raise UserError(f"MSeg key '{key}': {value}: give it on the command line as {instead}, and remove "
                                f"the key from the config")
            note(key, f"empty -> ignored (on the command line: {instead})")
    if out.get("dataset") == "single":
        out["dataset"] = []
        note("dataset", "MSeg's placeholder 'single' -> [] (name the dataset: dataset=<name>)")
    elif isinstance(out.get("dataset"), str):
        out["dataset"] = [out["dataset"]]
    return out, notes
