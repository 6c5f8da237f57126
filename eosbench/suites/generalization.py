"""Generalization suites: SGD vs SAM vs SGD-TRACER (and Adam vs SAM vs Adam-TRACER).

The claim (Williams & Roberts 2023, G-TRACER, arXiv:2306.13914; Foret et al. 2021, SAM,
arXiv:2010.01412): methods that control curvature generalize better than plain SGD.  The
G-TRACER paper reports, for ResNet20 on CIFAR-100 (test accuracy, %, one number per cell):

===============================  =======  =======  ==========
setting                          SGD      SAM      SGD-TRACER
===============================  =======  =======  ==========
no augmentation                  51.43    58.98    63.47
standard augmentation            70.02    70.33    70.71
50% label noise, no augmentation 21.96    49.89    51.62
ViT, standard augmentation       37.7     38.2     39.1
===============================  =======  =======  ==========

(41.6 for SGD-TRACER on the ViT with batch splitting.)  These numbers are in
:data:`PAPER` and printed next to eosbench's in the generalization table.

What the suites run
-------------------
The paper's training budgets and hyperparameters could not be read offline when these
tasks were written, so the full-scale tasks use the standard CIFAR recipe of Foret et al.
(2021, Sec. 3.1 and App. C): batch 128, heavy-ball momentum 0.9, lr 0.1 with a cosine
schedule, weight decay 5e-4, 200 epochs, SAM radius 0.05; the ViT uses Adam-free SGD with
the same recipe at lr 0.01 (stated in each task).  TRACER is eosbench's discretization of
the paper's penalty (:mod:`eosbench.optim.tracer`), strength ``rho = 1e-6`` and damping
``eps = 1e-8``, chosen by a 10-step pilot at initialization on the reduced ResNet20 task
so that the penalty's pull :math:`\\rho\\lVert Hu\\rVert/\\lVert g\\rVert` is about 0.5
(ratios 0.4-0.9 over the first 10 steps; 1e-5 gave 1.1-7.4 and a rising loss) -- not
tuned on test accuracy.  ResNet20 here has BatchNorm (``model.batchnorm=true``).

* ``generalization`` -- the full-scale tasks: ResNet20 on CIFAR-10 and CIFAR-100 in the
  three settings, the ViT on CIFAR-100 with augmentation, and the Adam family on CIFAR-100
  without augmentation.  Needs the full data sets (``eosbench data download cifar100``)
  and a GPU.
* ``generalization-reduced`` -- what runs offline on a CPU: the first 3,000 CIFAR-10
  training images of the offline copy and its 1,000 test images, ResNet20, no
  augmentation, 15 epochs, SGD vs SAM vs SGD-TRACER, 3 seeds.  It is a *reduced* version
  of the table (another data set, 6% of CIFAR-10, 7.5% of the epochs); its verdicts say
  what these runs show, not whether the paper's numbers hold.

Each task measures the test accuracy every epoch and, at the end of training, the
sharpness and the Hessian trace (on the first 256 training examples, to keep the
measurement cheap), so the table shows curvature next to accuracy.

The ordering claims are suite-level comparisons (:mod:`eosbench.claims.compare`): a
one-sided Welch t-test at 5% over seeds, reported with the difference of means, its 95%
confidence interval and Hedges' g; ``INCONCLUSIVE`` when the seeds do not separate the
methods.  Negative controls: the reversed claim (SGD > SAM) and "the untrained network
beats the trained one" must FAIL.
"""

from __future__ import annotations

from dataclasses import replace

from ..task import DataSpec, MeasurementSpec, ModelSpec, OptimizerSpec, ScheduleSpec, Task, options
from . import Comparison, register, suite

WR2023 = "Williams & Roberts 2023, G-TRACER (arXiv:2306.13914)"
FORET2021 = "Foret et al. 2021, SAM (arXiv:2010.01412), Sec. 3.1 / App. C recipe"

BATCH = 128
SGD = OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=BATCH)
SAM = replace(SGD, name="sam", rho=0.05)
TRACER = replace(SGD, name="tracer", rho=1e-6, eps=1e-8)
ADAM = OptimizerSpec(name="adam", lr=1e-3, weight_decay=5e-4, batch_size=BATCH)
ADAM_SAM = replace(ADAM, name="sam", base="adam", rho=0.05)
ADAM_TRACER = replace(ADAM, name="tracer", base="adam", rho=1e-6)
METHODS = {
    "sgd": ("SGD", SGD),
    "sam": ("SAM", SAM),
    "sgd-tracer": ("SGD-TRACER", TRACER),
    "adam": ("Adam", ADAM),
    "adam-sam": ("SAM (Adam)", ADAM_SAM),
    "adam-tracer": ("Adam-TRACER", ADAM_TRACER),
}

SETTINGS = {
    "noaug": ("no augmentation", {}),
    "aug": ("standard augmentation", {"augment": True}),
    "noise=0.5": ("50% label noise, no augmentation", {"label_noise": 0.5, "noise_seed": 0}),
}

#: The paper's reported test accuracies (%), Williams & Roberts 2023, CIFAR-100.
PAPER: dict[tuple[str, str, str], float] = {
    ("resnet20", "noaug", "sgd"): 51.43,
    ("resnet20", "noaug", "sam"): 58.98,
    ("resnet20", "noaug", "sgd-tracer"): 63.47,
    ("resnet20", "aug", "sgd"): 70.02,
    ("resnet20", "aug", "sam"): 70.33,
    ("resnet20", "aug", "sgd-tracer"): 70.71,
    ("resnet20", "noise=0.5", "sgd"): 21.96,
    ("resnet20", "noise=0.5", "sam"): 49.89,
    ("resnet20", "noise=0.5", "sgd-tracer"): 51.62,
    ("vit", "aug", "sgd"): 37.7,
    ("vit", "aug", "sam"): 38.2,
    ("vit", "aug", "sgd-tracer"): 39.1,
}


def _final_measurements() -> tuple[MeasurementSpec, ...]:
    return (
        MeasurementSpec("sharpness", every=0, options=options(n_examples=256, tol=1e-2)),
        MeasurementSpec("trace", every=0, options=options(n_examples=256, n_samples=12)),
    )


def gen_task(
    dataset: str,
    data: DataSpec,
    model: str,
    setting: str,
    method: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float | None = None,
    reference: str = WR2023,
    model_spec: ModelSpec | None = None,
) -> Task:
    label, opt = METHODS[method]
    if lr is not None:
        opt = replace(opt, lr=lr)
    setting_label, data_changes = SETTINGS[setting]
    name = f"{dataset}/{model}/ce/{method}/{setting}"
    task = register(
        Task(
            name=name,
            data=replace(data, **data_changes),
            model=model_spec or ModelSpec(name=model, batchnorm=model == "resnet20"),
            loss="ce",
            optimizer=opt,
            schedule=ScheduleSpec(
                steps=None, epochs=epochs, eval_every=steps_per_epoch, lr_schedule="cosine"
            ),
            measurements=_final_measurements(),
            description=f"{label}, {setting_label}: final test accuracy, sharpness and trace",
            reference=f"{reference}; recipe: {FORET2021}",
            # the generalization table's cell of its runs
            meta=options(dataset=dataset, model=model, setting=setting, method=method),
        )
    )
    return task


def orderings(dataset: str, model: str, setting: str, methods=("sgd", "sam", "sgd-tracer")):
    """The paper's ordering claims over one row, plus their negative controls."""
    sgd, sam, tracer = (f"{dataset}/{model}/ce/{m}/{setting}" for m in methods)
    return (
        Comparison("ordering", better=sam, worse=sgd, citation=WR2023 + "; " + FORET2021),
        Comparison("ordering", better=tracer, worse=sam, citation=WR2023),
        Comparison("ordering", better=tracer, worse=sgd, citation=WR2023),
        Comparison("ordering", better=sgd, worse=sam, expect="FAIL",
                   note="negative control: the reversed claim"),  # fmt: skip
        Comparison("ordering", better=sgd, worse=sgd, metric="test_acc@first", against="test_acc",
                   expect="FAIL", note="negative control: the untrained network beats the trained one"),  # fmt: skip
    )


# --- full scale: CIFAR-10/100, ResNet20 and ViT (GPU, full data) ----------------------------
FULL = []
FULL_CMP = []
for _ds, _classes in (("cifar100", "cifar100"), ("cifar10", "cifar10")):
    _data = DataSpec(name=_classes)
    _spe = 50000 // BATCH
    for _setting in SETTINGS:
        FULL += [
            gen_task(_ds, _data, "resnet20", _setting, m, epochs=200, steps_per_epoch=_spe)
            for m in ("sgd", "sam", "sgd-tracer")
        ]
        FULL_CMP += orderings(_ds, "resnet20", _setting)
    FULL += [
        gen_task(_ds, _data, "vit", "aug", m, epochs=200, steps_per_epoch=_spe, lr=0.01)
        for m in ("sgd", "sam", "sgd-tracer")
    ]
    FULL_CMP += orderings(_ds, "vit", "aug")
FULL += [
    gen_task("cifar100", DataSpec(name="cifar100"), "resnet20", "noaug", m, epochs=200,
             steps_per_epoch=50000 // BATCH)  # fmt: skip
    for m in ("adam", "adam-sam", "adam-tracer")
]
FULL_CMP += orderings("cifar100", "resnet20", "noaug", ("adam", "adam-sam", "adam-tracer"))

GENERALIZATION = suite(
    "generalization",
    FULL,
    "SGD vs SAM vs SGD-TRACER (and the Adam family): ResNet20 and ViT on CIFAR-10/100, "
    "three settings, 200 epochs; full data sets and a GPU",
    comparisons=tuple(FULL_CMP),
)

# --- torchvision's ResNet-18 (the vision extra), CIFAR-10, standard augmentation (GPU) --------
# The CIFAR form of the model (3x3 stride-1 stem, no max-pool: eosbench.models.vision), built by
# torchvision.models.get_model; registered for a GPU with the full CIFAR-10, not run here.
RESNET18 = ModelSpec(name="torchvision", options=options(arch="resnet18"))
TV = [
    gen_task("cifar10", DataSpec(name="cifar10"), "resnet18", "aug", m, epochs=200,
             steps_per_epoch=50000 // BATCH, model_spec=RESNET18)  # fmt: skip
    for m in ("sgd", "sam", "sgd-tracer")
]
GENERALIZATION_RESNET18 = suite(
    "generalization-resnet18",
    TV,
    "SGD vs SAM vs SGD-TRACER with torchvision's ResNet-18 (CIFAR stem) on CIFAR-10 with "
    "augmentation, 200 epochs; the vision extra, the full data set and a GPU",
    comparisons=orderings("cifar10", "resnet18", "aug"),
)

# --- reduced: the offline CIFAR-10 copy on a CPU ----------------------------------------------
REDUCED_DATA = DataSpec(name="cifar10", n_train=3000, n_test=1000)
REDUCED = [
    gen_task("cifar10-3k", REDUCED_DATA, "resnet20", "noaug", m, epochs=15,
             steps_per_epoch=3000 // BATCH)  # fmt: skip
    for m in ("sgd", "sam", "sgd-tracer")
]
GENERALIZATION_REDUCED = suite(
    "generalization-reduced",
    REDUCED,
    "reduced generalization table: ResNet20 on the first 3,000 CIFAR-10 images, no "
    "augmentation, 15 epochs, SGD vs SAM vs SGD-TRACER, 3 seeds (CPU, offline)",
    comparisons=orderings("cifar10-3k", "resnet20", "noaug"),
)
