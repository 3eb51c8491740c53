"""One trial, as a plain Ray Tune function trainable: build, pretrain, fine-tune, report each epoch.

The driver (`ecgtune.search`) passes `config = {"spec": <Spec as dict>, <sampled params>...}`
or `{"spec": ..., "variant": name}`. Everything the trial does lives in
`ecgtune.stages.TwoStageRun`; this file only adapts it to Tune: resume from
`tune.get_checkpoint()` and one `tune.report(metrics, checkpoint=...)` per epoch (the driver turns
those into the dashboard's series: `ecgtune.sweep_callbacks`). An epoch that diverged (NaN/inf loss
or objective) is reported without a checkpoint and ends the trial without an error
(`ecgtune.searchers` tells Optuna FAIL and keeps it out of ASHA's rungs).
"""

from __future__ import annotations

import gc
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from ecgtune.backbones import BackboneStore, ClaimTiming
from ecgtune.experiment import trial_spec
from ecgtune.reuse import SharedPretraining
from ecgtune.spec import Spec
from ecgtune.stages import TwoStageRun


class GPUUnavailableError(RuntimeError):
    """Ray granted a trial GPUs that torch cannot use."""


def trial_device(spec: Spec, granted_gpus: list[Any]) -> str:
    """The device a trial trains on: "cuda" when Ray granted GPUs and torch sees one, "cpu" when it
    granted none; a GPU torch cannot use is an error unless the spec opts into `cpu_fallback`."""
    if not granted_gpus:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if spec.resources.cpu_fallback:
        return "cpu"
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    raise GPUUnavailableError(
        f"Ray granted this trial GPU {granted_gpus} (resources.gpu: {spec.resources.gpu}) but torch "
        f"{torch.__version__} ({build}) finds no CUDA device, so the trial would leave the GPU idle. Install "
        "a CUDA build of torch on every GPU worker (e.g. pip install torch==2.13.0 --index-url "
        "https://download.pytorch.org/whl/cu128), or set resources.cpu_fallback: true to train on the CPU."
    )


def run_trial(config: dict[str, Any]) -> None:
    spec = trial_spec(Spec.model_validate(config["spec"]), config)
    device = trial_device(spec, ray.get_gpu_ids())
    # Torch would otherwise start one thread per host core in every trial: oversubscribed
    # CPUs slow each trial many times over when trials share a node.
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    if spec.run.reuse_actors and torch.cuda.is_available():
        # A reused worker still holds what the previous trial's dropped tensors cached.
        gc.collect()
        torch.cuda.empty_cache()
    # Device memory this process holds before the trial allocates anything: 0 in the fresh worker
    # process Tune starts for every trial (run.reuse_actors false), whose exit frees all it held.
    cuda_bytes_at_start = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    run = TwoStageRun(spec, device=device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load(d)
    context = tune.get_context()
    shared = shared_pretraining(run, context.get_trial_id(), context.get_experiment_name())
    node_id = ray.get_runtime_context().get_node_id()
    try:
        shared.prepare()  # reuse the stored backbone, wait for the trial pretraining it, or claim it
        while not run.done:
            metrics = shared.tag(run.step())
            shared.after_step()  # once pretrained here: the entry, before this epoch is reported
            metrics["node_id"] = node_id
            metrics["device"] = device
            metrics["cuda_bytes_at_start"] = cuda_bytes_at_start
            if run.diverged:
                # The trial ends here (run.done), reported as diverged; raising instead would make Tune retry
                # a deterministic divergence max_failures times. No checkpoint of NaN weights: a retry or a
                # resumed sweep restores the last finite epoch.
                tune.report(metrics)
                break
            with tempfile.TemporaryDirectory() as d:
                run.save(d)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    finally:
        # A trial stopped, failed or killed mid-pretraining gives its claim up, so a waiting trial
        # pretrains the key at once rather than after the claim's lease.
        shared.close()


def shared_pretraining(run: TwoStageRun, trial_id: str, sweep: str) -> SharedPretraining:
    """The trial's side of the sweep's backbone store (`run.backbones`); with `run.reuse_backbones`
    false, or nothing to pretrain, one that shares nothing."""
    spec = run.spec
    store = BackboneStore(spec.run.backbones) if spec.run.reuse_backbones and spec.run.backbones else None
    return SharedPretraining(
        run,
        store,
        holder=trial_id,
        provenance={"trial": trial_id, "sweep": sweep},
        timing=ClaimTiming(lease_s=spec.run.backbone_lease_s),
    )
