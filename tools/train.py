"""Train a segmentation model (HRNet or PSPNet) on several datasets at once, as MSeg does.

    python train.py config/1080/mseg-3m.yaml shards=/data/shards pretrained=hrnetv2_w48_imagenet_pretrained.pth
    torchrun --nproc_per_node 8 train.py 1080/mseg-3m shards=/data/shards save_path=runs/mseg-3m --resume auto
    python train.py config/demo/train-demo.yaml max_iters=20 --print-config     # the resolved config, then exit

CONFIG is a YAML file, or one this project ships named without config/ and .yaml (1080/mseg-3m,
480/mseg-3m, 1080/mseg-mgda, qvga/ccsa, ...); MSeg's own training YAML files load too, their keys mapped.

key=value sets any config key by its bare name (no DATA./TRAIN. section), the value read as YAML:
  base_lr=0.005  max_iters=2000  precision=bf16  dataset=[ade20k-150-relabeled,bdd-relabeled]  dataset_weights=null
Unknown keys and wrong types are errors that name the closest key. Keys that take paths, relative to the
folder you run in: shards (the shard root tools/shard.py --shards wrote), save_path (the run folder: config.yaml,
train.log, tensorboard/, checkpoints/, val/), pretrained (ImageNet backbone weights: docs/weights.md).

One process: `python train.py ...` (or `mseg-train` once installed); several: `torchrun --nproc_per_node N
train.py ...` (NCCL on GPUs, gloo on the CPU). Every key with its default and meaning: docs/config.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

from mseg_fast.config import Config, load_config, to_yaml
from mseg_fast.cli import USER_ERRORS, ToolParser, fail
from mseg_fast.eval.validate import report, validate
from mseg_fast.data.mixing import global_crops
from mseg_fast.loader import build_spec, build_train_loader, build_val_batches, choose_backend, loader_summary
from mseg_fast.models.factory import build_model
from mseg_fast.models.load import load_strict
from mseg_fast.train import checkpoint
from mseg_fast.train.distributed import DistInfo, init_distributed, release_group, sync_batchnorm
from mseg_fast.train.loop import RunState, fit
from mseg_fast.train.numerics import set_numerics
from mseg_fast.train.objective import build_optimizer, derive_max_iters
from mseg_fast.train.recalibrate import recalibrate_batchnorm
from mseg_fast.train.startup import (RunLog, accept_run_folder, check_resumable, check_run_folder, check_shards,
                                     init_weights, restore_rng_of_rank)
from mseg_fast.train.steps import build_step


def gather(value, info: DistInfo) -> list:
    if info.world_size == 1:
        return [value]
    out = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("config", help="a config file, or a shipped recipe (1080/mseg-3m)")
    parser.add_argument("--resume", help="'auto' (the run folder's latest checkpoint, if any) or a checkpoint path")
    parser.add_argument("--init-from", help="weights to start from (a head of another class count is re-initialised)")
    parser.add_argument("--start-over", action="store_true",
                        help="train from scratch in a run folder that holds checkpoints (deletes them)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, MSeg keys mapped, overrides applied) as YAML and exit")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (above)")
    args = parser.parse_intermixed_args(argv)
    try:
        notes: list[str] = []
        config = load_config(args.config, args.overrides, notes)
        if args.print_config:
            for note in notes:
                print(f"# {note}")
            print(to_yaml(config), end="")
            return 0
        info = init_distributed()
        return run(config, info, args.resume, args.init_from, args.start_over, notes)
    except USER_ERRORS as error:
        return fail(error)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3


def run(config: Config, info: DistInfo, resume: str | None, init_from: str | None, start_over: bool = False,
        notes: list[str] = ()) -> int:
    run_dir = Path(config.save_path)
    log = RunLog(info.is_main)
    numerics = set_numerics(config.tf32, config.deterministic)  # before the first CUDA kernel
    check_run_folder(run_dir, resume, start_over)
    spec = build_spec(config, info.rank, info.world_size, device=str(info.device), local_ranks=info.local_world_size)
    if config.val_every:  # every split the run reads is checked now, not at the first validation hours later
        val_spec = build_spec(config, info.rank, info.world_size, train=False, device=str(info.device),
                              local_ranks=info.local_world_size)
        check_shards(val_spec.shardsets, config.verify_shards, log)
    check_shards(spec.shardsets, config.verify_shards, log)
    class_names, taxonomy_sha = spec.shardsets[0].class_names, spec.shardsets[0].taxonomy_sha256
    torch.manual_seed(config.manual_seed)  # the same initial weights on every rank
    model = build_model(config.arch, len(class_names), config.layers, config.init)
    # From here on each rank draws its own numbers (dropout, CCSA's pairs), as MSeg's independent processes
    # did; base seed + rank, as the loaders seed their streams.
    torch.manual_seed(config.manual_seed + info.rank)
    found = checkpoint.find_resume(run_dir, resume, log) if resume else None
    resume_path, saved = found if found else (None, None)
    if saved:
        check_resumable(saved, resume_path, len(class_names), taxonomy_sha, info, config.optimizer)
        load_strict(model, saved["model"], str(resume_path))
    else:
        init_weights(model, config.pretrained, init_from, log)
    model = sync_batchnorm(model, info).to(info.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda"
                                                        else None) if info.world_size > 1 else model
    step_model = torch.compile(network, backend=config.compile_backend) if config.compile else network
    optimizer = build_optimizer(model.param_groups(), config.base_lr, config.momentum, config.weight_decay,
                                config.optimizer)
    scaler = torch.amp.GradScaler(info.device.type, enabled=config.precision == "fp16")
    state = RunState(0)
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        state = RunState(saved["iteration"], saved["skipped_steps"])
        restore_rng_of_rank(saved["rng"], info)
    loader_state = saved["loader"][info.rank] if saved else None
    loader = build_train_loader(config, info.rank, info.world_size, str(info.device), loader_state,
                                info.local_world_size)
    accept_run_folder(run_dir, to_yaml(config), start_over, log)  # every input accepted: now write
    max_iters = config.max_iters or derive_max_iters(config.num_examples, config.batch_size, len(config.dataset))
    crops = global_crops(list(config.dataset), config.batch_size, info.world_size, config.dataset_weights,
                         config.dataset_gpu_mapping)
    log(f"run {run_dir}: global batch {config.batch_size} ({info.world_size} ranks), crops per step {crops}, "
        f"{max_iters} iterations, base lr {config.base_lr}, {config.arch} {len(class_names)} classes, "
        f"{config.precision}" + (f", resuming at iteration {state.iteration}" if saved else ""))
    log(loader_summary(config, spec, choose_backend(config, str(info.device)), str(info.device),
                       info.local_world_size))
    log(numerics)
    for line in notes:  # how an MSeg config's keys were read
        log(line)
    weights = torch.tensor(config.dataset_weights or [1.0] * len(config.dataset), device=info.device)

    def save(current: RunState) -> None:
        loaders = gather(loader.state_dict(), info)
        rngs = gather(checkpoint.rng_state(info.device), info)
        if info.is_main:
            path = checkpoint.save(run_dir, current.iteration, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "iteration": current.iteration, "skipped_steps": current.skipped_steps, "loader": loaders,
                "rng": rngs, "config": to_yaml(config),
                "taxonomy": {"num_classes": len(class_names), "sha256": taxonomy_sha}}, config.keep_last, config.keep_every)
            log(f"checkpoint {path}")

    writer = SummaryWriter(str(run_dir / "tensorboard")) if info.is_main else None

    def record(iteration: int, scalars: dict[str, float]) -> None:
        if writer is not None:
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, iteration)
            writer.flush()

    def evaluate(current: RunState) -> None:
        if config.bn_recalibrate:  # a loader of its own: the training stream stays as it is
            stats_loader = build_train_loader(config, info.rank, info.world_size, str(info.device), None,
                                              info.local_world_size)
            used = recalibrate_batchnorm(model, stats_loader, config.bn_recalibrate, info.device)
            stats_loader.close()
            log(f"BatchNorm statistics recomputed over {used} training batches (bn_recalibrate)")
        batches = build_val_batches(config, info.rank, info.world_size, str(info.device), config.val_batch_size,
                                    info.local_world_size)
        matrices = validate(model, batches, len(class_names), len(config.dataset), info.device)
        if info.is_main:
            lines, scalars = report(matrices, list(config.dataset), class_names, current.iteration, run_dir / "val")
            for line in lines:
                log(line)
            record(current.iteration, scalars)

    fit(step_model, optimizer, scaler, loader, state, max_iters, config.base_lr, config.power, weights,
        config.precision, info.device, config.print_freq, config.save_every, save, log, list(config.dataset),
        step=build_step(config), evaluate=evaluate, eval_every=config.val_every,
        record=record, control=info.control)
    if writer is not None:
        writer.close()
    loader.close()
    log.close()
    if info.world_size > 1:
        # The model's parameters keep DDP's reducer alive: everything that holds them goes while the group lives.
        del step_model, network, model, optimizer, save, evaluate
        release_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
