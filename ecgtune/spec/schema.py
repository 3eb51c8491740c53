"""What a spec is: the pydantic schema of sweep specs and training configs, and the run facts a Spec
answers (planned epochs, the network config, ASHA's clock). Field-level checks only; checks across
fields are in `ecgtune.spec.configs`, reading and writing YAML in `ecgtune.spec.load`.

One schema serves both uses:
- a *sweep spec* (`sweeps/*.yaml`) has a `search` section: what to vary, how to stop;
- a *training config* (`ecgtune export` output, or hand-written) has none: one fixed run.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from ecgtune.train_config import TrainConfig

SPEC_VERSION = 1


class Strict(BaseModel):
    # NaN and infinity are never a valid setting (a NaN bound would validate every comparison as False).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(Strict):
    """A registered model (family or preset) plus fixed constructor arguments."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StoreSpec(Strict):
    """A cached store: a path, or one of the embedded demo stores (`ecgtune data demo` builds them;
    `ecgtune sweep`, `train` and `demo` build them first when a spec names them).

    `path` may use environment variables (`${ECGTUNE_DATA}/ptbxl`); a relative
    path is taken relative to ECGTUNE_DATA (default: ./data of the directory the
    command runs in), never silently to wherever a Ray worker happens to start.
    """

    path: str | None = None
    demo: Literal["deepfake", "ptbxl"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StoreSpec:
        if (self.path is None) == (self.demo is None):
            got = "both" if self.path is not None else "neither"
            raise ValueError(f"give exactly one of 'path' or 'demo' (got {got})")
        return self


class DataSpec(Strict):
    pretrain: StoreSpec | None = None  # None: no pretraining stage (train on PTB-XL only)
    finetune: StoreSpec


def _stage_fields() -> dict[str, Any]:
    """TrainConfig's fields as pydantic fields, with the types, defaults and bounds declared there; a
    spec must say how long each stage trains (`epochs` has no default), and the seed is the spec's."""
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    return {
        f.name: (hints[f.name], ... if f.name == "epochs" else f.default)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "seed"
    }


class StageSpec(create_model("_StageFields", __base__=Strict, __module__=__name__, **_stage_fields())):
    """One stage's training settings (epochs, lr, batch size, ...): the fields, defaults and bounds of
    `ecgtune.train_config.TrainConfig`, declared there once."""

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.model_dump(), seed=seed)


class TransferSpec(Strict):
    keep_head: bool = False  # False: a new head for PTB-XL targets/statistics


class StagesSpec(Strict):
    pretrain: StageSpec = StageSpec(epochs=0)
    finetune: StageSpec
    transfer: TransferSpec = TransferSpec()


class Distribution(Strict):
    """One searched parameter, as an Optuna distribution.

    type int/float: low, high, optional log or step. type categorical: choices.
    `divides`: (categorical) keep only choices that divide the value of another
    searched or fixed parameter — e.g. ViT heads must divide the embedding dim.
    `same_as`: not sampled; copies another parameter (e.g. tied ResNet widths).
    """

    type: Literal["int", "float", "categorical", "same_as"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    divides: str | None = None
    same_as: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        given = [
            k
            for k in ("low", "high", "step", "choices", "divides", "same_as")
            if getattr(self, k) is not None
        ]
        given += ["log"] if self.log else []
        allowed = {
            "int": ["low", "high", "log", "step"],
            "float": ["low", "high", "log", "step"],
            "categorical": ["choices", "divides"],
            "same_as": ["same_as"],
        }[self.type]
        if extra := [k for k in given if k not in allowed]:
            raise ValueError(
                f"{', '.join(extra)} not allowed with type {self.type}; allowed: {', '.join(allowed)}"
            )
        if self.type in ("int", "float"):
            _check_range(self)
        elif self.type == "categorical":
            _check_choices(self)
        elif not self.same_as:
            raise ValueError("type same_as needs 'same_as: <key of search.space or fixed parameter>'")
        return self


def _check_range(d: Distribution) -> None:
    if d.low is None or d.high is None:
        raise ValueError(f"type {d.type} needs both low and high")
    if d.type == "int":
        for k in ("low", "high", "step"):
            v = getattr(d, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"type int needs whole numbers; {k}={v!r}")
    if d.low > d.high:
        raise ValueError(f"empty range low={d.low} > high={d.high}")
    if d.log and d.low <= 0:
        raise ValueError(f"log scale needs low > 0 (got low={d.low})")
    if d.step is not None:
        if d.step <= 0:
            raise ValueError(f"step must be > 0 (got step={d.step})")
        if d.log:
            raise ValueError("step cannot be combined with log (Optuna supports one or the other)")
        if d.type == "int" and (d.high - d.low) % d.step:
            raise ValueError(f"high={d.high} is not low={d.low} plus a multiple of step={d.step}")


def _check_choices(d: Distribution) -> None:
    if not d.choices:
        raise ValueError("type categorical needs a non-empty list 'choices'")
    for c in d.choices:
        if not isinstance(c, (type(None), bool, int, float, str)):
            raise ValueError(f"choice {c!r} is not a scalar; Optuna stores only null, bool, int, float, str")
    seen: list[Any] = []
    for c in d.choices:
        if any(type(c) is type(s) and c == s for s in seen):
            raise ValueError(f"choice {c!r} appears twice")
        seen.append(c)
    if d.divides and not all(is_int(c) and c > 0 for c in d.choices):
        raise ValueError(f"divides needs positive integer choices (got {d.choices})")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class ASHASpec(Strict):
    # The epochs ASHA's rungs count. "finetune": fine-tuning epochs only, so every trial pretrains to
    # the end and is first judged after fine-tuning; "all": every epoch of both stages, so rungs can
    # fall in pretraining, where the objective is the pretrained model read out zero-shot on PTB-XL.
    # On the demo data that zero-shot value did not rank trials as their final objective does
    # (Spearman 0.04-0.08 over 40 trials, docs/benchmarks.md part 4): hence the default.
    clock: Literal["finetune", "all"] = "finetune"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    brackets: int = Field(1, ge=1)


class SearcherSpec(Strict):
    # tpe: Optuna's TPE; random: uniform draws; gp: Optuna's Gaussian-process sampler (its cost per
    # suggestion grows with the cube of the trials seen: for sweeps of at most a few hundred trials).
    algorithm: Literal["tpe", "random", "gp"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(4, ge=0)
    multivariate: bool = False  # tpe only: model the keys jointly (Optuna's multivariate TPE)
    # tpe only: the most trials TPE reads per suggestion (the best half and the newest half beyond it),
    # so a sweep of thousands of trials suggests as fast as one of hundreds (ecgtune.bounded_tpe). 250:
    # with 1,000, TPE still took 68% of the driver's time and up to 1.3 s per suggestion of 10
    # parameters (py-spy on `bench.replay driver-cost`, docs/benchmarks.md part 4); TPE's good group
    # (at most 25 trials) is always inside the view.
    tpe_history: int = Field(250, ge=50)


class BackboneSharingSpec(Strict):
    """How the searcher makes trials share pretrained backbones (`ecgtune.backbone_search`).

    A backbone is one draw of the space's model.* and pretrain.* keys (what the backbone key covers).
    A trial either draws a new backbone, which it pretrains, or reuses a backbone another trial has
    pretrained (it is in the store) and draws only the fine-tuning keys: TPE samples both levels, the
    fine-tuning keys given the backbone's. A backbone is offered again only once it is pretrained, so no
    trial waits, and only while fewer than `trials_per_backbone` trials have used it.

    `pick`: which pretrained backbone a trial reuses. "best": the one whose trials scored best at ASHA's
    first rung, if it ranks in the best `top_fraction` of the backbones scored so far (else the trial
    draws a new one); "oldest": every pretrained backbone in turn until it has its trials.
    """

    trials_per_backbone: int = Field(4, ge=1)
    pick: Literal["best", "oldest"] = "best"
    top_fraction: float = Field(0.5, gt=0, le=1)


class SearchSpec(Strict):
    space: dict[str, Distribution]
    num_samples: int = Field(ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    searcher: SearcherSpec = SearcherSpec()
    asha: ASHASpec | None = ASHASpec()  # None: no early stopping
    backbones: BackboneSharingSpec | None = None  # None: every trial draws its own backbone
    # Wall-clock seconds after which the sweep stops (Tune's time_budget_s): trials still running then
    # are stopped, and the summary ranks what finished. Bounds a sweep's time whatever the searcher
    # samples and however fast the machine is; None: until num_samples trials have ended.
    time_budget_s: float | None = Field(None, gt=0)


class ResourcesSpec(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    # A trial Ray grants a GPU must find a CUDA device, or it fails at once: a CPU build of torch on a
    # GPU node would otherwise run the whole sweep 50-100x slower on paid, idle GPUs. True: run such
    # trials on the CPU anyway (each trial's device is in its results and the report).
    cpu_fallback: bool = False


class RunSpec(Strict):
    storage_path: str = "runs"
    max_failures: int = Field(1, ge=0)
    checkpoints_kept: int = Field(2, ge=1)
    # False: a fresh worker process per trial, whose exit hands all its (GPU) memory back. True: Tune
    # keeps the process for the next trial, saving its start-up (~5 s per trial here, bench/
    # ray_overhead.py); the trial then empties torch's CUDA cache first and reports what is left.
    reuse_actors: bool = False
    # Pretrained backbones shared across trials and sweeps (ecgtune.backbones): a trial whose backbone key
    # is in this store fine-tunes the stored backbone instead of pretraining. Any path or URI that
    # storage_path takes (a shared folder or s3://... for a multi-node cluster); None: <storage_path>/
    # backbones, so sweeps with one storage path share one store. reuse_backbones false: every trial
    # pretrains, and no store is read or written.
    backbones: str | None = None
    reuse_backbones: bool = True
    # How long a claim on a key may go without its holder's training advancing before a waiting trial
    # takes the key over (ecgtune.backbones.claims): a crashed pretrainer costs the others this long.
    backbone_lease_s: float = Field(120.0, gt=0)
    # Where the sweep's Optuna study is kept (ecgtune.study; optuna-dashboard reads it): an RDB URL such
    # as postgresql://user@host/db; None: a journal file on the driver's disk, beside the experiment.
    optuna_storage: str | None = None


NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class Spec(Strict):
    """A sweep spec (with `search`) or a standalone training config (without).

    `variants` (optional): named sets of overrides, each a mapping of spec paths
    (`model.name`, `data.pretrain`, `stages.finetune.epochs`, ...) to values. Each
    variant is one fixed experiment: the driver grids over the names, and each
    trial trains `apply_variant(spec, name)`. With variants, `search.space` is
    empty and `search.asha` null (fixed experiments run to the end).
    """

    version: int = SPEC_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    model: ModelSpec
    targets: list[str] = ["hr", "pr", "qrs", "qt"]
    data: DataSpec
    stages: StagesSpec
    seed: int = 0
    search: SearchSpec | None = None
    variants: dict[str, dict[str, Any]] | None = None
    resources: ResourcesSpec = ResourcesSpec()
    run: RunSpec = RunSpec()
    # Written by `ecgtune export`: where a config came from. Free-form, never read back into a run.
    origin: dict[str, Any] | None = None

    @property
    def pretrain_epochs(self) -> int:
        """Epochs a run of this spec pretrains: none without a pretraining store. The one rule for a
        run's planned length; trials, reports, the searcher and final training all ask here."""
        return self.stages.pretrain.epochs if self.data.pretrain is not None else 0

    @property
    def total_epochs(self) -> int:
        """Epochs a run of this spec trains, both stages."""
        return self.pretrain_epochs + self.stages.finetune.epochs

    def network_config(self) -> dict[str, Any]:
        """The model registry's config of this spec's network (`ecgtune.models.build_model`): the one
        place a spec becomes a model, for trials, final training, checkpoints' metadata and benchmarks."""
        return {"name": self.model.name, **self.model.params, "num_outputs": len(self.targets)}


def asha_max_t(spec: Spec, asha: ASHASpec) -> int:
    """The length of ASHA's clock: fine-tuning epochs, or every epoch of both stages."""
    return spec.stages.finetune.epochs if asha.clock == "finetune" else spec.total_epochs
