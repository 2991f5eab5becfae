"""Train an HRNet on mixed datasets: `python train.py CONFIG [key=value ...] [--resume auto|PATH]`.

One process: `python train.py ...`; several: `torchrun --nproc_per_node N train.py ...` (NCCL on
GPUs, gloo on the CPU). The run folder (`save_path`) gets config.yaml, train.log and checkpoints/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

from mseg_fast.config import Config, load_config, to_yaml
from mseg_fast.errors import UserError
from mseg_fast.eval.validate import report, validate
from mseg_fast.data.mixing import global_crops
from mseg_fast.loader import build_spec, build_train_loader, build_val_batches, choose_backend, loader_summary
from mseg_fast.models.factory import build_model
from mseg_fast.models.load import load_imagenet_backbone, load_strict, model_state
from mseg_fast.train import checkpoint
from mseg_fast.train.distributed import DistInfo, init_distributed, sync_batchnorm
from mseg_fast.train.loop import RunState, fit
from mseg_fast.train.objective import build_optimizer, derive_max_iters
from mseg_fast.train.steps import build_step


def gather(value, info: DistInfo) -> list:
    if info.world_size == 1:
        return [value]
    out = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def init_weights(model, config: Config, init_from: str | None, log) -> None:
    if config.pretrained:
        log(load_imagenet_backbone(model, config.pretrained))
    if init_from:  # fine-tuning: every tensor but a head of another class count
        state = model_state(checkpoint.load(Path(init_from)))
        own = model.state_dict()
        heads = [k for k in own if k.startswith(model.CLASSIFIER)]
        if any(k in state and state[k].shape != own[k].shape for k in heads):
            state = {**state, **{k: own[k] for k in heads}}
            log(f"{init_from}: classifier ({', '.join(model.CLASSIFIER)}) re-initialised for "
                f"{model.num_classes} classes")
        load_strict(model, state, init_from)


def restore_rng_of_rank(saved, info: DistInfo, log) -> None:
    """This rank's generators as the checkpoint recorded them (one entry per rank)."""
    if isinstance(saved, torch.Tensor):  # written before per-rank states: rank 0's CPU generator only
        saved = [{"cpu": saved}] * info.world_size
    if len(saved) != info.world_size:
        log(f"the checkpoint holds the random state of {len(saved)} ranks, this run has {info.world_size}: "
            f"random streams restart from manual_seed + rank, so the run does not continue exactly")
        return
    checkpoint.restore_rng(saved[info.rank], info.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--resume", help="'auto' (the run folder's latest checkpoint, if any) or a checkpoint path")
    parser.add_argument("--init-from", help="weights to start from (a head of another class count is re-initialised)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        info = init_distributed()
        return run(config, info, args.resume, args.init_from)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3


def run(config: Config, info: DistInfo, resume: str | None, init_from: str | None) -> int:
    run_dir = Path(config.save_path)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(config))
    log_file = open(run_dir / "train.log", "a") if info.is_main else None

    def log(line: str) -> None:
        if info.is_main:
            print(line, flush=True)
            log_file.write(line + "\n")
            log_file.flush()

    spec = build_spec(config, info.rank, info.world_size)
    class_names, taxonomy_sha = spec.shardsets[0].class_names, spec.shardsets[0].taxonomy_sha256
    torch.manual_seed(config.manual_seed)  # the same initial weights on every rank
    model = build_model(config.arch, len(class_names), config.layers)
    # From here on each rank draws its own numbers (dropout, CCSA's pairs), as MSeg's independent processes
    # did; base seed + rank, as the loaders seed their streams.
    torch.manual_seed(config.manual_seed + info.rank)
    resume_path = checkpoint.find_resume(run_dir, resume) if resume else None
    saved = checkpoint.load(resume_path) if resume_path else None
    if saved:
        if saved["taxonomy"] != {"num_classes": len(class_names), "sha256": taxonomy_sha}:
            raise UserError(f"{resume_path} was trained on {saved['taxonomy']['num_classes']} classes of another "
                            f"taxonomy than these shards ({len(class_names)} classes); use --init-from to fine-tune")
        load_strict(model, saved["model"], str(resume_path))
    else:
        init_weights(model, config, init_from, log)
    model = sync_batchnorm(model, info).to(info.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda"
                                                        else None) if info.world_size > 1 else model
    step_model = torch.compile(network) if config.compile else network
    optimizer = build_optimizer(model.param_groups(), config.base_lr, config.momentum, config.weight_decay)
    scaler = torch.amp.GradScaler(info.device.type, enabled=config.precision == "fp16")
    state = RunState(0)
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        state = RunState(saved["iteration"], saved["skipped_steps"])
        restore_rng_of_rank(saved["rng"], info, log)
    loader_state = saved["loader"][info.rank] if saved else None
    loader = build_train_loader(config, info.rank, info.world_size, str(info.device), loader_state,
                                info.local_world_size)
    max_iters = config.max_iters or derive_max_iters(config.num_examples, config.batch_size, len(config.dataset))
    crops = global_crops(list(config.dataset), config.batch_size, info.world_size, config.dataset_weights,
                         config.dataset_gpu_mapping)
    log(f"run {run_dir}: global batch {config.batch_size} ({info.world_size} ranks), crops per step {crops}, "
        f"{max_iters} iterations, base lr {config.base_lr}, {config.arch} {len(class_names)} classes, "
        f"{config.precision}" + (f", resuming at iteration {state.iteration}" if saved else ""))
    train_spec = build_spec(config, info.rank, info.world_size, device=str(info.device),
                            local_ranks=info.local_world_size)
    log(loader_summary(config, train_spec, choose_backend(config, str(info.device)), str(info.device),
                       info.local_world_size))
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
        record=record)
    if writer is not None:
        writer.close()
    loader.close()
    if info.world_size > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
