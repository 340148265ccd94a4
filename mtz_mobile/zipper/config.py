"""How to zip: every setting once, with its default, its allowed values and its help line.

The command line is derived from these fields (``mtz_mobile.cli.options``): a new zip option is
one field here (with ``help`` in its metadata) and, where it needs one, a check in ``validate``.
Importing this module does not start TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from mtz_mobile.backend import BACKENDS, requested
from mtz_mobile.data import check_validation_split
from mtz_mobile.errors import MTZError
from mtz_mobile.flat_options import option  # also the bench settings' (one declaration mechanism)

from .merge import METHODS as MERGE_METHODS
from .presets import DEFAULT_PRESET, FALLBACK_STEPS, PRESETS, preset_help, preset_value, steps_from

METHODS = tuple(MERGE_METHODS)   # one entry per merge method in merge.METHODS
PAIRINGS = ("exact", "greedy")
COMPENSATIONS = ("none", "next-layer")
SPARSITY = ("auto", "on", "off")
SPARSE_MASKS = ("larger", "union")
STRATEGIES = ("default", "mirrored", "multi-worker")
SCHEDULES = ("layer", "end")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LEVELS = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0)   # a sweep's sharing levels
# α grid of a budget search: the feature-serving task may be either one (LeNet-5 fine/coarse
# certified full sharing at 0.9 and 0.95 with the fine task first, none at 0.5 or 0.8)
BUDGET_ALPHAS = (0.1, 0.5, 0.9)
# RetrainSettings fields a preset fills when unset (iterations: presets.steps_from)
_RETRAIN_PRESET = ("learning_rate", "learning_rate_schedule", "distill", "schedule")


@dataclass
class RetrainSettings:
    """Light retraining of the zipped network (Algorithm 1, line 10). A None field takes its value
    from ZipConfig.preset (``presets.PRESETS``): explicit settings override the preset."""

    iterations: int | None = option(None, preset_help("retrain_iterations", "joint retraining steps (after each "
                                                      "zipped layer, or once at the end); mtz: --retrain-fraction "
                                                      "of the references' training"), flag="--retrain-iterations")
    # the references' training is the scale a retraining budget is measured in (the recipe that
    # certified 49.6 % on LeNet-5 spent a tenth of it); reference.json beside the models gives it
    fraction: float | None = option(None, preset_help("retrain_fraction", "retraining steps as a fraction of "
                                                      "--reference-iterations (unless --retrain-iterations is given; "
                                                      f"without a reference count: {FALLBACK_STEPS} steps)"),
                                    flag="--retrain-fraction")
    reference_iterations: int | None = option(None, "training iterations of the longest-trained reference model; "
                                                    "none: read from reference.json or STEM.json beside the models",
                                              flag="--reference-iterations", metavar="N")
    batch_size: int = option(128, "batch size per task in retraining", flag="--batch-size")
    learning_rate: float | None = option(None, preset_help("retrain_learning_rate", "Adam's learning rate in "
                                                           "retraining"), flag="--learning-rate")
    learning_rate_schedule: str | None = option(
        None, preset_help("retrain_learning_rate_schedule", "learning rate within each retraining call: constant, "
                          "or cosine: a linear warm-up over the first 5%% of the steps, then cosine decay to zero"),
        choices=LR_SCHEDULES, flag="--learning-rate-schedule")
    strategy: str = option("default", "mirrored: tf.distribute.MirroredStrategy over every visible device; "
                                      "multi-worker: MultiWorkerMirroredStrategy over the processes in TF_CONFIG "
                                      "(batch size stays the global batch)",
                           choices=STRATEGIES, flag="--strategy")
    # Each task's loss mixes the labels with the original model's soft targets (temperature T):
    # (1 − distill)·CE(labels) + distill·T²·CE(softmax(z_orig/T), softmax(z/T)). Light retraining
    # is meant to bring the zipped network back to the originals, and their outputs say where
    # that is more precisely than labels (measured: worst of 3 seeds +0.07 pp instead of +0.25 pp
    # on the LeNet-300-100 pair). distill = 0 is the paper's loss, labels only.
    distill: float | None = option(None, preset_help("retrain_distill", "weight of the original models' soft "
                                                     "targets in each task's retraining loss (0: labels only, the "
                                                     "paper's loss)"), flag="--distill")
    temperature: float = option(2.0, "softmax temperature of the soft targets", flag="--temperature")
    # Algorithm 1 retrains after every zipped layer. A deep network (MobileNetV2: 52 layers) pays a
    # graph trace per retraining call that costs more than a few steps: "end" retrains once,
    # ``iterations`` steps, after the last layer.
    schedule: str | None = option(None, preset_help("retrain_schedule", "retrain after each zipped layer (the "
                                                    "paper) or once at the end"), choices=SCHEDULES,
                                  flag="--retrain-schedule")

    def __post_init__(self):
        # Filled from the default preset so that a RetrainSettings on its own is usable; the names
        # left unset (not a field: never saved) let ZipConfig fill them from another preset instead.
        self.unset = fill_from_preset(self, DEFAULT_PRESET, None)


def fill_from_preset(settings: RetrainSettings, preset: str, unset: frozenset | None) -> frozenset:
    """Set ``settings``' fields named in ``unset`` (default: those that are None) from ``preset``;
    returns the names it filled."""
    if unset is None:
        unset = frozenset(n for n in _RETRAIN_PRESET + ("iterations",) if getattr(settings, n) is None)
    for name in unset - {"iterations"}:
        setattr(settings, name, preset_value(preset, f"retrain_{name}"))
    if "iterations" in unset:
        settings.iterations = steps_from(preset, None, settings.fraction, settings.reference_iterations)
    return unset


@dataclass
class ZipConfig:
    """How much to share and how. ``shared`` has one entry per hidden weight layer (or one for
    all): ``"all"``, a count of units (int) or a fraction of the narrower layer (float in [0, 1]).
    ``threshold`` (one ε per hidden layer) replaces ``shared`` when given. ``alpha`` weights the
    first task against the second; with more tasks ``task_weights`` (default: equal)."""

    shared: list = option(["all"], "units to share per hidden layer: all, a count or a fraction, one value or "
                                   "one per layer", parse="sharing")
    threshold: list[float] | None = option(None, "share the pairs with d < ε instead (one ε or one per layer)",
                                           parse="floats")
    alpha: float = option(0.5, "weight of task A in Hessians and loss (0 < α < 1)")
    task_weights: list[float] | None = option(None, "with three or more tasks: one weight per task", parse="floats")
    damping: float = option(1e-4, "λ relative to mean(diag(H_A + H_B))")
    method: str = option("mtz", "mtz: Hessian metric and optimal merge; random: the paper's baseline",
                         choices=METHODS)
    pairing: str = option("exact", "exact: minimum total d (assignment); greedy: smallest d first",
                          choices=PAIRINGS)
    compensation: str | None = option(None, preset_help("compensation", "refit each task's next layer by least "
                                                        "squares after a merge (none = the paper's method)"),
                                      choices=COMPENSATIONS)
    compensation_ridge: float = option(1e-3, "ridge of the next-layer refit, relative to mean(diag)")
    calibration_samples: int = option(10000, "training images per task for the Hessians")
    max_instances: int = option(500_000, "cap on Hessian instances per task and layer (a conv layer has one per "
                                         "output position)")
    sparse: str = option("auto", "treat zero weights as pruned connections (auto: when at least 25%% of the "
                                 "weights are zero)", choices=SPARSITY)
    sparse_mask: str = option("larger", "a merged sparse unit keeps the mask with more connections (the paper) "
                                        "or both masks", choices=SPARSE_MASKS)
    max_error_increase: float | None = option(
        None, "adaptive: per layer, the largest sharing whose validation error (after light retraining) rises "
              "at most PP percentage points for every task, by an upper confidence bound", metavar="PP")
    validation_split: float = option(0.1, "fraction of each task's training data held out (per class, seeded) "
                                          "to validate on; a data set's own x_val/y_val or validation/ folder "
                                          "is used instead when it has one")
    confidence: float = option(0.95, "confidence level of the bound on each task's error increase")
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    seed: int = option(0, "seed of calibration sampling, random pairing and retraining")
    preset: str = option(DEFAULT_PRESET, "the recipe that fills every setting left unset: mtz (retrain once at the "
                                         "end, a tenth of the references' training, Adam 1e-3 cosine), paper "
                                         "(Algorithm 1: 100 labels-only steps per layer at 1e-4, no compensation) "
                                         "or per-layer (0.3's default: the paper's schedule with compensation)",
                         choices=tuple(PRESETS))

    def __post_init__(self):
        """Fill the settings left unset from the preset, so every other module reads plain values."""
        if self.preset not in PRESETS:
            raise MTZError(f"unknown preset {self.preset!r}: use one of {', '.join(PRESETS)}")
        unset = self.retrain.unset
        self.retrain = replace(self.retrain)   # a copy: the caller's settings stay as they were
        fill_from_preset(self.retrain, self.preset, unset)
        if self.compensation is None:
            self.compensation = preset_value(self.preset, "compensation")
    # The zipper's forward passes and retraining run on Keras 3's backend (mtz_mobile.backend): jax needs
    # no TensorFlow, so a GPU machine without TensorFlow's CUDA wheels zips; the zip reads the same on any.
    backend: str = option("auto", "Keras backend the zipper computes with: tensorflow, jax, or auto "
                                  "(KERAS_BACKEND, else tensorflow)", choices=BACKENDS)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "ZipConfig":
        obj = dict(obj)
        if "validation_samples" in obj:   # written by 0.1, whose search held out test images
            raise MTZError("this zip was made by mtz-mobile 0.1, whose adaptive search validated on test images: "
                           "zip again with this version")
        obj["retrain"] = RetrainSettings(**obj["retrain"])
        return cls(**obj)

    def validate(self, n_hidden: int, n_tasks: int) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise MTZError(f"alpha must lie strictly between 0 and 1, got {self.alpha}: it weights task A against B")
        if self.task_weights is not None and (len(self.task_weights) != n_tasks or min(self.task_weights) <= 0):
            raise MTZError(f"give {n_tasks} positive task weights, got {self.task_weights}")
        for name, value, allowed in (("method", self.method, METHODS), ("pairing", self.pairing, PAIRINGS),
                                     ("compensation", self.compensation, COMPENSATIONS),
                                     ("strategy", self.retrain.strategy, STRATEGIES),
                                     ("retraining schedule", self.retrain.schedule, SCHEDULES),
                                     ("learning-rate schedule", self.retrain.learning_rate_schedule, LR_SCHEDULES),
                                     ("sparse", self.sparse, SPARSITY),
                                     ("sparse mask", self.sparse_mask, SPARSE_MASKS),
                                     ("backend", self.backend, BACKENDS)):
            if value not in allowed:
                raise MTZError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
        self.check_backend()
        if self.damping < 0:
            raise MTZError(f"damping must be non-negative, got {self.damping}")
        if self.calibration_samples <= 0 or self.max_instances <= 0:
            raise MTZError("calibration_samples and max_instances must be positive: the Hessians need data")
        if self.retrain.iterations < 0 or self.retrain.batch_size <= 0:
            raise MTZError("retraining iterations must be >= 0 and the batch size > 0")
        if (self.retrain.fraction is not None and self.retrain.fraction <= 0) or (
                self.retrain.reference_iterations is not None and self.retrain.reference_iterations <= 0):
            raise MTZError("--retrain-fraction and --reference-iterations must be positive")
        per_layer = self.threshold if self.threshold is not None else self.shared
        if len(per_layer) not in (1, n_hidden):
            raise MTZError(f"give one sharing value for all hidden layers or one for each of the {n_hidden}, "
                           f"got {len(per_layer)}")
        if self.threshold is not None and not MERGE_METHODS[self.method].uses_metric:
            raise MTZError(f"{self.method} sharing needs a count, not a threshold: use --shared")
        if self.max_error_increase is not None:
            if self.max_error_increase < 0:
                raise MTZError(f"max error increase must be >= 0 pp, got {self.max_error_increase}")
            if self.threshold is not None:
                raise MTZError("give either --threshold or --max-error-increase, not both")
        check_validation_split(self.validation_split)
        if not 0.5 <= self.confidence < 1.0:
            raise MTZError(f"confidence {self.confidence} is outside [0.5, 1): give e.g. 0.95")

    def check_backend(self) -> str:
        """The backend this zip runs on (see mtz_mobile.backend), refusing what only TensorFlow can do."""
        backend = requested(self.backend)
        if self.retrain.strategy != "default" and backend != "tensorflow":
            raise MTZError(f"--strategy {self.retrain.strategy} is tf.distribute's, TensorFlow only: drop it, or zip "
                           f"with --backend tensorflow (this zip runs on {backend})")
        return backend

    def layer_value(self, k: int):
        per_layer = self.threshold if self.threshold is not None else self.shared
        return per_layer[0] if len(per_layer) == 1 else per_layer[k]

    def weights(self, tasks: list[str]) -> dict[str, float]:
        if len(tasks) == 2 and self.task_weights is None:
            return {tasks[0]: self.alpha, tasks[1]: 1.0 - self.alpha}
        w = self.task_weights or [1.0] * len(tasks)
        return {t: v / sum(w) for t, v in zip(tasks, w)}


@dataclass
class BudgetSearch:
    """``zip --budget`` / ``deploy --budget``: sweep uniform sharing levels (most shared first) and
    task weights α, keep the most shared point certified within the budget (``zipper.budget``)."""

    budget: float | None = option(None, "search for the most shared zip whose bound on every task's validation "
                                        "error increase is within PP: sweeps --levels (most shared first, stopping "
                                        "at the first level certified) at each of --alphas and writes the frontier "
                                        "beside the zip (OUT.frontier/)", metavar="PP")
    levels: list[float] = option(list(DEFAULT_LEVELS), "with --budget: fractions of every hidden layer's units to "
                                                       "share, comma-separated", parse="floats")
    alphas: list[float] = option(list(BUDGET_ALPHAS), "with --budget: weights α of the first task against the "
                                                      "second to try at each level, comma-separated (ignored with "
                                                      "three or more tasks)", parse="floats")


def shared_count(value, n_a: int, n_b: int, layer_name: str) -> int:
    """Resolve "all" / a count / a fraction into a number of shared units."""
    top = min(n_a, n_b)
    if value == "all" or value is None:
        return top
    if isinstance(value, bool):
        raise MTZError(f"sharing value {value!r} for {layer_name} is not a count or a fraction")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise MTZError(f"fraction {value} for {layer_name} is outside [0, 1]: give a fraction or a count")
        return int(round(value * top))
    count = int(value)
    if count < 0 or count > top:
        raise MTZError(f"cannot share {count} units in {layer_name}: it has {n_a} units in the joint network and "
                       f"{n_b} in the new model, so at most {top}")
    return count
