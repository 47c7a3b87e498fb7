"""MEMO's equal-budget protocols: how many exemplars each method may keep.

* ``fair``: the budget is DER's final footprint, T backbones plus the benchmark
  buffer (2,000 exemplars): ``4*T*P + M0*img``.  DER keeps M0 exemplars; a
  single-backbone method keeps ``M0 + floor(4*(T-1)*P / img)``; MEMO, whose
  generalized blocks are shared, ``M0 + floor(4*(T-1)*P_g / img)``.
* ``auc``: the memory-agnostic curve, one point per smaller DER backbone
  (CIFAR: conv2, ResNet-14/20/26/32; ImageNet: conv4, ResNet-10/18/26/34/50).
  The first point's budget is the benchmark backbone (ResNet-32 / ResNet-18)
  with M0 exemplars, where DER and MEMO fill what their small networks leave;
  every other point's budget is DER with that backbone, where the
  single-backbone methods keep the benchmark backbone and MEMO uses the point's
  backbone split into generalized and specialized blocks.  As MEMO's
  ``utils/model2exemplar.py`` computes them.

With per-class allocation the buffer a method really uses is
``floor(exemplars / classes)`` per class.  Every method of the table is in costcl's
catalog (``costcl estimate --method podnet|bic|foster`` costs the steps behind the
single-backbone rows, as PyCIL runs them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from budgets.accounting import MIB, WORD_BYTES, Backbone, backbone, exemplar_bytes
from costmodel.errors import CostclError

SINGLE_BACKBONE = ("replay", "icarl", "wa", "podnet", "bic", "foster")
AUC_POINTS = {
    "cifar": ("conv2", "resnet14-cifar", "resnet20-cifar", "resnet26-cifar", "resnet32-cifar"),
    "imagenet": ("conv4", "resnet10", "resnet18", "resnet26", "resnet34", "resnet50"),
}
BENCHMARK = {"cifar": "resnet32-cifar", "imagenet": "resnet18"}
AUC_SPLIT = {"cifar": (10, 10), "imagenet": (50, 5)}
"""MEMO's AUC runs: CIFAR-100 B0Inc10, ImageNet-100 B50Inc5."""


@dataclass(frozen=True)
class MethodBudget:
    exemplars: int
    model_bytes: int
    exemplars_per_class: int
    backbone: str


@dataclass
class BudgetTable:
    protocol: str
    dataset: str
    model: str
    tasks: int
    init: int
    increment: int
    classes: int
    base_exemplars: int
    exemplar_bytes: int
    budget_bytes: int
    methods: dict[str, MethodBudget] = field(default_factory=dict)
    point: str | None = None

    @property
    def budget_mib(self) -> float:
        return self.budget_bytes / MIB

    @property
    def uncosted(self) -> list[str]:
        """Methods of MEMO's table that costcl's catalog does not cost: their rows would be
        MEMO's counting alone, with no step behind them.  Empty since PODNet, BiC and FOSTER
        joined the catalog (as PyCIL runs them); kept for the JSON's ``not_in_catalog``."""
        from costmodel.methods import catalog

        return [name for name in self.methods if name not in catalog()]

    def to_json(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "budget_mib": self.budget_mib,
                "not_in_catalog": self.uncosted,
                "tasks": self.tasks, "protocol": self.protocol, "dataset": self.dataset,
                "model": self.model, "point": self.point, "init": self.init,
                "increment": self.increment, "exemplar_bytes": self.exemplar_bytes,
                "methods": {k: asdict(v) for k, v in self.methods.items()}}


def task_count(classes: int, init: int, increment: int) -> int:
    if init < 1 or increment < 1:
        raise CostclError(f"--init and --increment must be >= 1, got {init} and {increment}")
    if init > classes:
        raise CostclError(f"--init {init} is more than the {classes} classes")
    if (classes - init) % increment:
        raise CostclError(f"--init {init} and --increment {increment} do not divide {classes} "
                          f"classes: {classes} - {init} must be a multiple of {increment}")
    return 1 + (classes - init) // increment


def _family(input_shape: tuple[int, ...]) -> str:
    if len(input_shape) != 3:
        raise CostclError(f"MEMO's protocols compare image backbones; a {len(input_shape)}-number "
                          "--input-size has none: use --budget-mib or --flops-budget")
    return "cifar" if input_shape[1] <= 32 else "imagenet"


def _generalized(b: Backbone) -> int:
    if b.generalized is None:
        raise CostclError(f"{b.model} has no stages to split into generalized and specialized "
                          "blocks; MEMO's budget needs a ResNet or ConvNet backbone")
    return b.generalized


def _row(exemplars: int, model_bytes: int, classes: int, b: str) -> MethodBudget:
    if exemplars < 0:
        raise CostclError(f"the budget leaves {exemplars} exemplars for a {b} model")
    return MethodBudget(exemplars, model_bytes, exemplars // classes, b)


def fair(dataset: str, model: str, input_shape: tuple[int, ...], classes: int, init: int,
         increment: int, base: int = 2000) -> BudgetTable:
    if base < 0:
        raise CostclError(f"--base-exemplars must be >= 0, got {base}")
    T = task_count(classes, init, increment)
    b = backbone(model, input_shape[0])
    img = exemplar_bytes(input_shape)
    budget = WORD_BYTES * T * b.params + base * img
    t = BudgetTable("fair", dataset, model, T, init, increment, classes, base, img, budget)
    t.methods["der-expand"] = _row(base, WORD_BYTES * T * b.params, classes, model)
    g = _generalized(b)
    t.methods["memo"] = _row(base + (WORD_BYTES * (T - 1) * g) // img,
                             WORD_BYTES * (g + T * b.specialized), classes, model)
    for name in SINGLE_BACKBONE:
        t.methods[name] = _row(base + (WORD_BYTES * (T - 1) * b.params) // img, b.bytes, classes, model)
    return t


def auc(dataset: str, input_shape: tuple[int, ...], classes: int, init: int | None = None,
        increment: int | None = None, base: int = 2000) -> list[BudgetTable]:
    family = _family(input_shape)
    init = init if init is not None else AUC_SPLIT[family][0]
    increment = increment if increment is not None else AUC_SPLIT[family][1]
    T = task_count(classes, init, increment)
    img = exemplar_bytes(input_shape)
    bench = backbone(BENCHMARK[family], input_shape[0])
    out = []
    for i, point in enumerate(AUC_POINTS[family]):
        b = backbone(point, input_shape[0])
        memo_params = _generalized(b) + T * b.specialized
        der_params = T * b.params
        if i == 0:  # the benchmark backbone with M0 exemplars sets the budget
            budget_params = bench.params
            single = base
        else:       # DER with this backbone sets it
            budget_params = der_params
            single = base + (WORD_BYTES * (der_params - bench.params)) // img
        budget = WORD_BYTES * budget_params + base * img
        t = BudgetTable("auc", dataset, bench.model, T, init, increment, classes, base, img,
                        budget, point=point)
        t.methods["der-expand"] = _row(base + (WORD_BYTES * (budget_params - der_params)) // img,
                                       WORD_BYTES * der_params, classes, point)
        t.methods["memo"] = _row(base + (WORD_BYTES * (budget_params - memo_params)) // img,
                                 WORD_BYTES * memo_params, classes, point)
        for name in SINGLE_BACKBONE:
            t.methods[name] = _row(single, bench.bytes, classes, bench.model)
        out.append(t)
    return out
