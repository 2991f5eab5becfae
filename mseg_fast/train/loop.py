"""The training loop: one visible function; variants (MGDA, CCSA) replace the step."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from mseg_fast.clock import clock
from mseg_fast.data.batch import Batch
from mseg_fast.train.objective import per_dataset_loss, poly_lr

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepResult:
    """What a step reports, as tensors on the device where it ran: the loop reads them (a host
    synchronisation) only when it logs, not every step."""

    loss: torch.Tensor  # 0-d, detached
    parts: torch.Tensor  # each dataset's mean loss, NaN where the batch had no labelled pixel of it
    skipped: bool = False  # fp16: the scaler skipped a step with inf/NaN gradients
    scales: dict[int, float] | None = None  # MGDA: the weight given to each dataset's gradient
    terms: dict[str, torch.Tensor | float] | None = None  # the named terms of a composite loss (aux, CCSA's)

    def part_values(self) -> dict[int, float]:
        """dataset id -> mean loss, for the datasets the batch had labelled pixels of (reads the device)."""
        return {k: v for k, v in enumerate(self.parts.tolist()) if not math.isnan(v)}


class NonFiniteGradient(FloatingPointError):
    """A dataset's gradient holds inf or NaN (MGDA checks each before combining them)."""

    def __init__(self, dataset_id: int):
        super().__init__(f"non-finite gradient of dataset {dataset_id}")
        self.dataset_id = dataset_id


@dataclass
class RunState:
    """What the loop advances and a checkpoint stores."""

    iteration: int
    skipped_steps: int = 0


def device_used_gib(device: torch.device) -> float:
    """Memory in use on the GPU by every allocator (torch's peak leaves out DALI's pool and cuDNN's
    workspaces), from the driver."""
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / 2**30


def apply_gradients(loss: torch.Tensor, optimizer, scaler) -> bool:
    """Backward and SGD step through the fp16 scaler; True when the scaler skipped the step."""
    optimizer.zero_grad(set_to_none=True)
    scale_before = scaler.get_scale() if scaler.is_enabled() else None  # fp16 only: reads the device
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return scale_before is not None and scaler.get_scale() < scale_before


def forward(model, images: torch.Tensor, precision: str, extras: bool = True):
    """The network under the precision's autocast: SegOutputs with `extras`, else logits."""
    dtype = AUTOCAST[precision]
    if dtype is None:  # fp32: batches handed over as float16 (output_dtype) meet fp32 weights
        images = images.float()
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(images, extras=extras)


def supervised_loss(outputs, batch: Batch, weights: torch.Tensor, aux_weight: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """MSeg's per-dataset mean loss on the main head, plus aux_weight x the same on the auxiliary head
    (PSPNet; HRNet has none).

    Returns:
        The combined loss, the main and auxiliary terms (None without that head), per-dataset means
        (per_dataset_loss's).
    """
    main, parts = per_dataset_loss(outputs.logits, batch.labels, batch.dataset_ids, weights)
    if outputs.aux is None:
        return main, main, None, parts
    aux, _ = per_dataset_loss(outputs.aux, batch.labels, batch.dataset_ids, weights)
    return main + aux_weight * aux, main, aux, parts


def standard_step(model, batch: Batch, weights: torch.Tensor, optimizer, scaler, precision: str,
                  aux_weight: float = 0.4) -> StepResult:
    """Forward, MSeg's per-dataset mean loss (plus aux_weight x the auxiliary head's, for PSPNet),
    backward, SGD step."""
    loss, main, aux, parts = supervised_loss(forward(model, batch.images, precision), batch, weights, aux_weight)
    terms = {"main": main.detach(), "aux": aux.detach()} if aux is not None else None
    skipped = apply_gradients(loss, optimizer, scaler)
    return StepResult(loss.detach(), parts, skipped, terms=terms)


class StopRequested:
    """SIGTERM (a cluster's pre-emption) asks the loop to checkpoint and leave cleanly."""

    def __init__(self, group=None):
        self.requested, self.group = False, group  # group: a host (gloo) process group; None: the default one
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """Whether any rank was asked to stop. The signal reaches ranks at slightly different moments; were
        each to act on its own flag, one would enter the checkpoint's collectives while another ran the next
        step's, and both would hang. One scalar all-reduce per step makes them stop at the same iteration;
        with NCCL it goes through a gloo group on the host (DistInfo.control), so a CUDA step never waits
        for it."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


def fit(model, optimizer, scaler, loader: Iterator[Batch], state: RunState, max_iters: int, base_lr: float,
        power: float, weights: torch.Tensor, precision: str, device: torch.device, print_freq: int, save_every: int,
        save: Callable[[RunState], None], log: Callable[[str], None], dataset_names: list[str],
        step: Callable = standard_step, evaluate: Callable[[RunState], None] | None = None,
        eval_every: int = 0, record: Callable[[int, dict[str, float]], None] | None = None,
        control=None) -> RunState:
    """Train from state.iteration to max_iters; checkpoint every save_every, at the end, and on SIGTERM;
    evaluate every eval_every iterations and at the end.

    Raises:
        FloatingPointError: a non-finite loss in fp32/bf16, naming the iteration.
    """
    stop = StopRequested(control)
    model.train()
    window_start, data_wait, samples = time.perf_counter(), 0.0, 0
    # The first non-finite loss (its iteration and value), kept on the device and read only where the loop
    # reads the device anyway (a log line) or must not go on (a checkpoint, validation, the end).
    bad_iteration = torch.full((), -1, dtype=torch.int64, device=device)
    bad_loss = torch.zeros((), device=device)

    def refuse_non_finite() -> None:
        if int(bad_iteration) >= 0:
            raise FloatingPointError(f"non-finite loss ({float(bad_loss)}) at iteration {int(bad_iteration)}; "
                                     f"lower base_lr or check the data of this batch")
    while state.iteration < max_iters:
        tick = time.perf_counter()
        batch = next(loader).to(device)
        data_wait += time.perf_counter() - tick
        for group in optimizer.param_groups:  # step n uses lr(n - 1), as MSeg's schedule; PSPNet's heads x10
            group["lr"] = poly_lr(base_lr, state.iteration, max_iters, power) * group.get("lr_mult", 1.0)
        try:
            result = step(model, batch, weights, optimizer, scaler, precision)
        except NonFiniteGradient as error:
            raise FloatingPointError(f"non-finite gradient of dataset {dataset_names[error.dataset_id]} at iteration "
                                     f"{state.iteration + 1}; lower base_lr or check that dataset's data") from None
        if precision != "fp16":  # fp16's scaler skips such steps itself
            first = (bad_iteration < 0) & ~torch.isfinite(result.loss)
            bad_iteration = torch.where(first, state.iteration + 1, bad_iteration)
            bad_loss = torch.where(first, result.loss.float(), bad_loss)
        state.skipped_steps += int(result.skipped)
        state.iteration += 1
        samples += len(batch)
        if state.iteration % print_freq == 0 or state.iteration == max_iters:
            refuse_non_finite()
            loss, part_values = float(result.loss), result.part_values()
            terms = {k: float(v) for k, v in (result.terms or {}).items()}
            seconds = time.perf_counter() - window_start
            rate = samples / seconds
            eta = (max_iters - state.iteration) * seconds / max(1, samples / len(batch))
            parts = " ".join(f"{dataset_names[k]}={v:.3f}" for k, v in sorted(part_values.items()))
            memory = (f" mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f}G "
                      f"device {device_used_gib(device):.1f}G" if device.type == "cuda" else "")
            scales = {dataset_names[k]: v for k, v in (result.scales or {}).items()}
            if record:
                record(state.iteration, {"train/loss": loss, "train/lr": optimizer.param_groups[0]["lr"],
                                         "train/samples_per_s": rate, "train/data_wait": data_wait / seconds,
                                         **{f"train/loss/{dataset_names[k]}": v for k, v in part_values.items()},
                                         **{f"train/mgda_scale/{k}": v for k, v in scales.items()},
                                         **{f"train/term/{k}": v for k, v in terms.items()}})
            log(f"iter {state.iteration}/{max_iters} loss {loss:.4f} [{parts}] lr {optimizer.param_groups[0]['lr']:.6f} "
                f"{rate:.1f} samples/s data-wait {100 * data_wait / seconds:.0f}% eta {clock(eta)}{memory}"
                + (f" skipped {state.skipped_steps}" if state.skipped_steps else "")
                + (" scales " + " ".join(f"{k}={v:.3f}" for k, v in scales.items()) if scales else "")
                + (" terms " + " ".join(f"{k}={v:.4f}" for k, v in terms.items()) if terms else ""))
            window_start, data_wait, samples = time.perf_counter(), 0.0, 0
        if evaluate and eval_every and (state.iteration % eval_every == 0 or state.iteration == max_iters):
            refuse_non_finite()
            evaluate(state)
        stopping = stop.agreed()
        if state.iteration % save_every == 0 or state.iteration == max_iters or stopping:
            refuse_non_finite()  # never a checkpoint of weights a non-finite step has touched
            save(state)
        if stopping:
            log(f"SIGTERM: checkpoint written at iteration {state.iteration}; resume with --resume auto")
            break
    return state
