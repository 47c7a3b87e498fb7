"""The scenario: everything a cost depends on, in one object every layer shares.

A field left ``None`` means "not said": the method's paper defaults fill it
first, then the dataset's, then costcl's (:func:`costmodel.methods.resolve`).
A scenario loads from a TOML file whose keys are these field names (method
options in an ``[options]`` table); command-line flags override the file.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from costmodel import checks
from costmodel.datasets import DatasetSpec, dataset
from costmodel.files import read_toml
from costmodel.errors import CostclError, suggest

if TYPE_CHECKING:
    import torch

DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""costcl's dtype names and the torch dtype each means (torch is imported only when one is
needed, so parsing a scenario, ``costcl --help`` and a cached estimate stay torch-free)."""
INPUT_DTYPES = ("float", "int64")
"""'float': inputs in the scenario's dtype; 'int64': token ids in [0, vocab) (text models)."""
MAX_INPUT_RANK = 4
"""Sizes --input-size takes: a 1-D signal or vector up to a video clip (C, T, H, W)."""
DEVICES = ("cpu", "cuda")
ATTENTION_MODES = ("auto", "math", "fused")
"""``--attention``: the kernel PyTorch would select on the device, the math decomposition
(bmm, softmax, bmm), or the device's fused kernel wherever one takes the call."""
SETTINGS = ("class-il", "task-il")
DEFAULT_MODEL, DEFAULT_DATASET = "resnet18-cifar", "cifar10"


@dataclass(frozen=True)
class Scenario:
    method: str = "sgd"
    impl: str | None = None
    """Which implementation of the method (``costcl methods`` lists them); default:
    the method's reference public code where costcl reproduces it."""
    model: str | None = None
    """Default: the method's paper (e.g. resnet32-cifar for MEMO), else resnet18-cifar."""
    dataset: str | None = None
    """Default: the method's paper, else cifar10."""
    input_size: tuple[int, ...] | None = None
    """One sample's shape, 1 to 4 sizes (C,H,W; C,L audio; L tokens; C,T,H,W); overrides
    the dataset's shape (custom data)."""
    input_dtype: str = "float"
    """'float' (the scenario's dtype) or 'int64' token ids, drawn in [0, vocab)."""
    vocab: int | None = None
    """Token ids' range, required with (and only with) ``input_dtype='int64'``."""
    num_classes: int | None = None
    """Classifier width; the dataset's class count unless given."""
    tasks: int | None = None
    epochs: int | None = None
    """Epochs per task."""
    batch_size: int | None = None
    replay_batch: int | None = None
    """Replayed samples per step, for methods that replay."""
    buffer_size: int | None = None
    """Exemplars kept in the replay buffer."""
    optimizer: str | None = None
    dtype: str = "fp32"
    sparsity: float | None = None
    """Fraction of weights pruned (masked), for methods with a sparse variant."""
    train_from: str | None = None
    """Modules before the first one whose qualified name starts with this are frozen."""
    trainable: frozenset[str] | None = None
    """Python API: exactly these parameters train (overrides ``train_from``)."""
    holdout: float | None = None
    """Fraction of the training images held out for validation."""
    device: str = "cpu"
    """Where the step runs: 'cpu' or 'cuda' (allocator rounding, optimizer code path)."""
    attention: str = "auto"
    """Which kernel runs ``scaled_dot_product_attention`` (:data:`ATTENTION_MODES`)."""
    setting: str = "class-il"
    """'class-il' (no task identity at test time) or 'task-il'."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Method options (``--option KEY=VALUE``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise CostclError(f"options must be a table of KEY = VALUE, got {self.options!r}; "
                              "in TOML write [options] on its own line, then key = value lines")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.trainable is not None and not isinstance(self.trainable, frozenset):
            if isinstance(self.trainable, str) or not isinstance(self.trainable, Iterable):
                raise CostclError(f"trainable must be a list of parameter names, got {self.trainable!r}")
            object.__setattr__(self, "trainable", frozenset(self.trainable))
        if self.input_size is not None:
            if isinstance(self.input_size, str) or not isinstance(self.input_size, Iterable):
                raise CostclError(f"input size must be {_SIZES_WORDS}, got {self.input_size!r}")
            object.__setattr__(self, "input_size", tuple(self.input_size))
        self.validate()

    # -- derived facts -----------------------------------------------------------
    @property
    def data(self) -> DatasetSpec:
        return dataset(self.dataset or DEFAULT_DATASET)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_size or self.data.input_shape

    @property
    def in_channels(self) -> int:
        """What model builders get as ``in_channels``: the first size of a 2- to 4-size input
        (C of C,H,W or C,L), and 1 for a 1-size input (a flat vector or a token sequence has
        no channel axis; a factory embedding tokens takes its vocabulary from its own code)."""
        shape = self.input_shape
        return shape[0] if len(shape) > 1 else 1

    @property
    def input_torch_dtype(self) -> torch.dtype:
        """The dtype of a batch: int64 for token ids, else the scenario's dtype."""
        import torch

        return torch.int64 if self.input_dtype == "int64" else self.torch_dtype

    @property
    def classes(self) -> int:
        return self.num_classes or self.data.classes

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, DTYPES[self.dtype])

    def images_per_task(self) -> int:
        usable = round(self.data.train_images * (1 - (self.holdout or 0.0)))
        return usable // (self.tasks or self.data.tasks)

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["input_size"] = list(self.input_shape)
        out["num_classes"] = self.classes
        out["trainable"] = sorted(self.trainable) if self.trainable is not None else None
        out["options"] = dict(self.options)
        return out

    # -- checks --------------------------------------------------------------------
    def validate(self) -> None:
        """Every field typed and in range, so bad values fail here, in one line, not deep inside."""
        for name in ("method", "dtype", "device", "setting", "input_dtype"):
            checks.text(getattr(self, name), name)
        for name in ("impl", "model", "dataset", "optimizer", "train_from"):
            if getattr(self, name) is not None:
                checks.text(getattr(self, name), _flag(name))
        dataset(self.dataset or DEFAULT_DATASET)
        if self.setting not in SETTINGS:
            raise suggest(self.setting, SETTINGS, "setting")
        for name in ("batch_size", "tasks", "epochs", "num_classes"):
            if getattr(self, name) is not None:
                checks.count(getattr(self, name), _flag(name), minimum=1)
        for name in ("replay_batch", "buffer_size"):
            if getattr(self, name) is not None:
                checks.count(getattr(self, name), _flag(name))
        for name, fix in (("sparsity", "; 0.9 keeps one weight in ten"), ("holdout", "")):
            value = getattr(self, name)
            if value is not None and not 0.0 <= checks.number(value, name) < 1.0:
                raise CostclError(f"{name} must be in [0, 1), got {value}{fix}")
        if self.dtype not in DTYPES:
            raise suggest(self.dtype, DTYPES, "dtype")
        if self.device not in DEVICES:
            raise suggest(self.device, DEVICES, "device")
        checks.text(self.attention, "attention")
        if self.attention not in ATTENTION_MODES:
            raise suggest(self.attention, ATTENTION_MODES, "attention")
        if self.input_size is not None:
            if not 1 <= len(self.input_size) <= MAX_INPUT_RANK or any(
                    isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.input_size):
                raise CostclError(f"input size must be {_SIZES_WORDS}, got {self.input_size!r}")
        self._validate_input_dtype()
        if self.trainable is not None and not all(isinstance(n, str) for n in self.trainable):
            raise CostclError("trainable must be parameter names (strings)")


    def _validate_input_dtype(self) -> None:
        """Token ids need their range (the runner draws them), and a range without token ids
        is a mistake to say, not a value to ignore."""
        if self.input_dtype not in INPUT_DTYPES:
            raise suggest(self.input_dtype, INPUT_DTYPES, "input dtype")
        if self.vocab is not None:
            checks.count(self.vocab, "vocab", minimum=1)
        if self.input_dtype == "int64" and self.vocab is None:
            raise CostclError("--input-dtype int64 needs --vocab N: token ids are drawn in "
                              "[0, N); e.g. --vocab 30522")
        if self.input_dtype != "int64" and self.vocab is not None:
            raise CostclError(f"--vocab {self.vocab} applies to token ids only; add "
                              "--input-dtype int64 or drop --vocab")


_SIZES_WORDS = (f"1 to {MAX_INPUT_RANK} positive integers (e.g. C,H,W; C,L for audio; "
                "L for tokens)")


def _flag(name: str) -> str:
    return name.replace("_", "-")


FIELDS = {f.name for f in dataclasses.fields(Scenario)}


def parse_input_size(text: str) -> tuple[int, ...]:
    """'3,32,32' -> (3, 32, 32), '1,16000' -> (1, 16000), '784' -> (784,), or a one-line
    error: 1 to 4 positive sizes."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not 1 <= len(dims) <= MAX_INPUT_RANK or any(d < 1 for d in dims):
        raise CostclError(f"malformed --input-size {text!r}; write 1 to {MAX_INPUT_RANK} "
                          "positive sizes, e.g. 3,32,32 (C,H,W), 1,16000 (C,L) or 784")
    return dims


def parse_option(text: str) -> tuple[str, Any]:
    """'beta=2e-4' -> ('beta', 0.0002): TOML value syntax, bare words as strings."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CostclError(f"malformed --option {text!r}; write KEY=VALUE, e.g. ratio=0.15")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a scenario file; unknown keys and parse errors are one-line errors."""
    p = Path(path)
    data = read_toml(p, "config file")
    scenario = data.get("scenario", data)
    if not isinstance(scenario, dict):
        raise CostclError(f"config file {str(p)!r}: [scenario] must be a table of key = value lines")
    unknown = sorted(set(scenario) - FIELDS)
    if unknown:
        raise suggest(unknown[0], sorted(FIELDS), f"key in {p.name}:")
    try:
        size = scenario.get("input_size")
        if isinstance(size, str):
            scenario["input_size"] = parse_input_size(size)
        elif isinstance(size, int) and not isinstance(size, bool):  # input_size = 784
            scenario["input_size"] = (size,)
        Scenario(**scenario)  # each value typed and in range, named with the file
    except CostclError as e:
        raise CostclError(f"config file {str(p)!r}: {e}") from None
    return scenario


def method_and_impl(text: str) -> tuple[str, str | None]:
    """'lightcl@costcl' -> ('lightcl', 'costcl'); 'lightcl' -> ('lightcl', None)."""
    name, _, impl = text.partition("@")
    return name.strip(), impl.strip() or None


def build(file_values: Mapping[str, Any] | None = None, **flags: Any) -> Scenario:
    """A scenario from a config file's values, overridden by flags that were given."""
    values: dict[str, Any] = dict(file_values or {})
    options = values.pop("options", None) or {}
    if not isinstance(options, Mapping):
        raise CostclError(f"options must be a table of KEY = VALUE, got {options!r}")
    options = dict(options)
    options.update(flags.pop("options", None) or {})
    values.update({k: v for k, v in flags.items() if v is not None})
    method = values.get("method")
    if isinstance(method, str) and "@" in method:  # --method NAME@IMPL, as --methods takes
        name, impl = method_and_impl(method)
        if values.get("impl") not in (None, impl):
            raise CostclError(f"--method {method} and --impl {values['impl']} name two "
                              "implementations; give one")
        values["method"], values["impl"] = name, impl
    try:
        return Scenario(**values, options=options)
    except TypeError as e:
        raise CostclError(f"bad scenario value: {e}") from None
