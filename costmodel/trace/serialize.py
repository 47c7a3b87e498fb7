"""Records (a :class:`~costmodel.trace.records.StepTrace`, an estimate) as plain JSON
data, and back, checked.

The trace cache (:mod:`costmodel.cache`) keeps traces on disk; a cache file is
data, never code (no pickle), and a file that does not decode into exactly the
records' declared types is rejected rather than trusted.

The (de)coders are derived from the records' type annotations, not written by
hand, so a field added to a record is stored and restored without touching
this module (a hand-written list would silently drop it and a warm estimate
would differ from a cold one).  A dataclass is stored as the list of its field
values in declaration order; the source fingerprint in the cache key changes
whenever ``records.py`` does, so an entry is never read with another layout.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from costmodel.trace.records import StepTrace


class DecodeError(ValueError):
    """Stored data that does not have the shape the records declare."""


Decoder = Callable[[Any], Any]


def encode(value: Any) -> Any:
    """Records to JSON-ready data: dataclasses as lists of fields, enums as values."""
    t = type(value)
    if t is int or t is str or t is bool or value is None:  # the common cases first: speed
        return value
    if t is tuple or t is list:
        return [encode(v) for v in value]
    names = _field_names(t)
    if names is not None:
        return [encode(getattr(value, name)) for name in names]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if t is float:
        return value
    if isinstance(value, Mapping):
        return {_key(k): encode(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(encode(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise DecodeError(f"cannot store a {t.__name__}")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _key(k: Any) -> str:
    if not isinstance(k, str):
        raise DecodeError(f"dict keys must be strings, got {type(k).__name__}")
    return k


def _fail(expected: str, value: Any) -> DecodeError:
    return DecodeError(f"expected {expected}, got {type(value).__name__}")


def _scalar(tp: type) -> Decoder:
    if tp is float:  # a float-typed value that happens to be whole is stored as an int
        def decode_float(value: Any) -> Any:
            if type(value) not in (float, int):
                raise _fail("float", value)
            return value
        return decode_float

    def decode(value: Any) -> Any:
        # bool is an int in Python; a stored true where a count belongs is corruption
        if type(value) is not tp:
            raise _fail(tp.__name__, value)
        return value
    return decode


def _none(value: Any) -> None:
    if value is not None:
        raise _fail("null", value)
    return None


def _form(tp: Any) -> tuple[str, tuple]:
    """How a declared type is stored: its form and that form's arguments.  The one
    dispatch :func:`decoder` and :func:`encoder` share, so the two directions cannot
    disagree on what a type is."""
    if tp in (int, str, bool, float):
        return "scalar", (tp,)
    if tp is Any:
        return "any", ()
    if tp is type(None):
        return "none", ()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum", (tp,)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "record", (tp,)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None, the one union the records use
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return "optional", (options[0],)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ("ints", (None,)) if args[0] is int else ("items", (args[0],))
        return ("ints", (len(args),)) if all(a is int for a in args) else ("fixed", args)
    if origin in (list, frozenset, dict):
        return origin.__name__, args
    if origin is Mapping:
        return "mapping", args
    raise TypeError(f"cannot store {tp!r}")


def _optional(inner: Decoder) -> Decoder:
    """``X | None``: ``None``, or ``inner``'s answer (decoding and encoding alike)."""
    return lambda value: None if value is None else inner(value)


@functools.cache
def decoder(tp: Any) -> Decoder:
    """A function that turns stored data back into a value of type ``tp``, or raises."""
    form, args = _form(tp)
    return _DECODERS[form](*args)


def _decode_enum(tp: type) -> Decoder:
    def decode_enum(value: Any) -> Any:
        try:
            return tp(value)
        except ValueError:
            raise _fail(tp.__name__, value) from None
    return decode_enum


def _decode_items(item_tp: Any) -> Decoder:
    item = decoder(item_tp)
    return lambda value: tuple([item(v) for v in _list(value)])


def _decode_fixed(*item_tps: Any) -> Decoder:
    items = [decoder(a) for a in item_tps]

    def decode_fixed(value: Any) -> tuple:
        value = _list(value)
        if len(value) != len(items):
            raise DecodeError(f"expected {len(items)} values, got {len(value)}")
        return tuple(f(v) for f, v in zip(items, value))
    return decode_fixed


def _decode_list(item_tp: Any) -> Decoder:
    item = decoder(item_tp)
    return lambda value: [item(v) for v in _list(value)]  # noqa: C416


def _decode_frozenset(item_tp: Any) -> Decoder:
    item = decoder(item_tp)
    return lambda value: frozenset(item(v) for v in _list(value))


def _decode_dict(key_tp: Any, item_tp: Any) -> Decoder:
    key, item = decoder(key_tp), decoder(item_tp)

    def decode_dict(value: Any) -> dict:
        if not isinstance(value, dict):
            raise _fail("object", value)
        return {key(k): item(v) for k, v in value.items()}
    return decode_dict


def _plain(value: Any) -> Any:
    """``Any`` (a method option's value): whatever JSON holds, checked to be only that."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value) is list:
        return [_plain(v) for v in value]
    if type(value) is dict:
        return {_key(k): _plain(v) for k, v in value.items()}
    raise _fail("a JSON value", value)


def _ints(length: int | None) -> Decoder:
    """A tuple of ints (sizes, ids, :data:`~costmodel.trace.records.Lin`): the bulk of a
    trace, so checked in one loop rather than a call per element."""
    def decode(value: Any) -> tuple[int, ...]:
        if type(value) is not list or (length is not None and len(value) != length):
            raise _fail(f"{length or 'some'} integers", value)
        for v in value:
            if type(v) is not int:
                raise _fail("an integer", v)
        return tuple(value)
    return decode


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise _fail("array", value)
    return value


def _dataclass_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    # resolved lazily: a record may name one declared after it (StepTrace -> KeptRoot)
    decoders: list[tuple[type | None, Decoder]] = []

    def decode(value: Any) -> Any:
        if not decoders:  # (scalar type checked inline, or None and a decoder): speed
            decoders.extend((h if h in (int, str, bool) else None, decoder(h))
                            for h in (hints[f.name] for f in fields))
        if type(value) is not list or len(value) != len(fields):
            raise DecodeError(f"{cls.__name__}: expected a list of {len(fields)} fields")
        args = []
        for (scalar, decode_field), v in zip(decoders, value):
            if scalar is None:
                args.append(decode_field(v))
            elif type(v) is scalar:
                args.append(v)
            else:
                raise _fail(scalar.__name__, v)
        return cls(*args)
    return decode


# -- typed encoding: the inverse of decoding ------------------------------------------

Encoder = Callable[[Any], Any]


@functools.cache
def encoder(tp: Any) -> Encoder:
    """A function that turns a value of type ``tp`` into JSON-ready data that
    :func:`decoder` turns back into an equal value, or raises :class:`DecodeError` when
    the value is not exactly of the declared type (a list where a tuple is declared, a
    bool where an int is, a NaN): what would not come back equal is never stored.
    Checking while encoding replaces decoding every entry once more to compare it."""
    form, args = _form(tp)
    return _ENCODERS[form](*args)


def _encode_scalar(tp: type) -> Encoder:
    if tp is not float:
        return functools.partial(_exactly, tp)

    def encode_float(value: Any) -> Any:
        if type(value) not in (float, int) or not math.isfinite(value):
            raise _fail("a finite float", value)
        return value
    return encode_float


def _encode_items(item_tp: Any) -> Encoder:
    item = encoder(item_tp)
    return lambda value: [item(v) for v in _exactly(tuple, value)]


def _encode_fixed(*item_tps: Any) -> Encoder:
    items = [encoder(a) for a in item_tps]

    def encode_fixed(value: Any) -> list:
        if len(_exactly(tuple, value)) != len(items):
            raise DecodeError(f"expected {len(items)} values, got {len(value)}")
        return [f(v) for f, v in zip(items, value)]
    return encode_fixed


def _encode_list(item_tp: Any) -> Encoder:
    item = encoder(item_tp)
    return lambda value: [item(v) for v in _exactly(list, value)]


def _encode_frozenset(item_tp: Any) -> Encoder:
    item = encoder(item_tp)
    return lambda value: sorted(item(v) for v in _exactly(frozenset, value))


def _encode_dict(key_tp: Any, item_tp: Any) -> Encoder:
    key, item = encoder(key_tp), encoder(item_tp)
    return lambda value: {key(k): item(v) for k, v in _exactly(dict, value).items()}


def _encode_mapping(key_tp: Any, item_tp: Any) -> Encoder:
    """A read-only view (a scenario's options) is stored as the equal dict it decodes to."""
    key, item = encoder(key_tp), encoder(item_tp)

    def encode_mapping(value: Any) -> dict:
        if not isinstance(value, Mapping):
            raise _fail("a mapping", value)
        return {key(k): item(v) for k, v in value.items()}
    return encode_mapping


def _exactly(tp: type, value: Any) -> Any:
    if type(value) is not tp:
        raise _fail(tp.__name__, value)
    return value


def _int_list(length: int | None) -> Encoder:
    def encode_ints(value: Any) -> list[int]:
        if type(value) is not tuple or (length is not None and len(value) != length):
            raise _fail(f"a tuple of {length or 'some'} integers", value)
        for v in value:
            if type(v) is not int:
                raise _fail("an integer", v)
        return list(value)
    return encode_ints


def _dataclass_encoder(cls: type) -> Encoder:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # what the decoder passes back
    encoders: list[tuple[str, type | None, Encoder]] = []

    def encode_record(value: Any) -> list:
        if not encoders:  # resolved lazily, as the decoder's are
            encoders.extend((f.name, hints[f.name] if hints[f.name] in (int, str, bool) else None,
                             encoder(hints[f.name])) for f in fields)
        if type(value) is not cls:
            raise _fail(cls.__name__, value)
        out = []
        for name, scalar, encode_field in encoders:
            v = getattr(value, name)
            if scalar is None:
                out.append(encode_field(v))
            elif type(v) is scalar:
                out.append(v)
            else:
                raise _fail(scalar.__name__, v)
        return out
    return encode_record


_DECODERS: dict[str, Callable[..., Decoder]] = {
    "scalar": _scalar, "any": lambda: _plain, "none": lambda: _none, "enum": _decode_enum,
    "record": _dataclass_decoder, "optional": lambda inner: _optional(decoder(inner)),
    "ints": _ints, "items": _decode_items, "fixed": _decode_fixed, "list": _decode_list,
    "frozenset": _decode_frozenset, "dict": _decode_dict, "mapping": _decode_dict}
"""Each :func:`_form` -> what builds its decoder (a mapping decodes to an equal dict)."""
_ENCODERS: dict[str, Callable[..., Encoder]] = {
    "scalar": _encode_scalar, "any": lambda: _plain, "none": lambda: _none,
    "enum": lambda tp: lambda value: _exactly(tp, value).value,
    "record": _dataclass_encoder, "optional": lambda inner: _optional(encoder(inner)),
    "ints": _int_list, "items": _encode_items, "fixed": _encode_fixed, "list": _encode_list,
    "frozenset": _encode_frozenset, "dict": _encode_dict, "mapping": _encode_mapping}
"""Each :func:`_form` -> what builds its encoder, the inverse of :data:`_DECODERS`'."""


def encode_trace(trace: StepTrace) -> list:
    return encoder(StepTrace)(trace)


def encode_step(trace: StepTrace, state_bytes: Mapping[str, int], anomaly: bool,
                prepared: frozenset[str] | None) -> dict[str, Any] | None:
    """A traced step's facts as plain data, or ``None`` when a value is not exactly of its
    declared type (only what comes back identical is cached: warm must equal cold)."""
    try:
        return {"trace": encode_trace(trace),
                "state_bytes": encoder(dict[str, int])(dict(state_bytes)),
                "anomaly": encoder(bool)(anomaly),
                "prepared_trainable": encoder(frozenset[str] | None)(prepared)}
    except (DecodeError, TypeError, RecursionError):
        return None


def decode_step(payload: Any) -> tuple[StepTrace, dict[str, int], bool, frozenset[str] | None]:
    """(trace, state bytes, anomaly mode, prepared trainable set) from :func:`encode_step`'s data."""
    if not isinstance(payload, dict) or set(payload) != {"trace", "state_bytes", "anomaly",
                                                          "prepared_trainable"}:
        raise DecodeError("not a stored step")
    try:
        state = decoder(dict[str, int])(payload["state_bytes"])
        anomaly = decoder(bool)(payload["anomaly"])
        prepared = decoder(list[str] | None)(payload["prepared_trainable"])
    except (TypeError, RecursionError) as e:
        raise DecodeError(str(e)) from None
    trace = decode_trace(payload["trace"])
    if prepared is not None and not set(prepared) <= set(trace.param_numel):
        raise DecodeError("prepared parameters not in the trace")
    return trace, state, anomaly, None if prepared is None else frozenset(prepared)


def decode_trace(data: Any) -> StepTrace:
    """The stored trace, type-checked and with every index in range, or :class:`DecodeError`."""
    try:
        trace = decoder(StepTrace)(data)
    except (TypeError, KeyError, IndexError, RecursionError) as e:
        raise DecodeError(str(e)) from None
    check(trace)
    return trace


def check(t: StepTrace) -> None:
    """Every index a trace holds points at something that exists (a decoded trace is
    read by formulas that index lists with these numbers; a bad one must not get that far)."""
    n_ops, n_st, n_nodes = len(t.ops), len(t.storages), len(t.nodes)

    def within(i: int | None, n: int, what: str) -> None:
        if i is not None and not 0 <= i < n:
            raise DecodeError(f"{what} index {i} out of range 0..{n - 1}")

    for op in t.ops:
        for sid in op.inputs + op.outputs:
            within(sid, n_st, "storage")
        if len(op.grad_nodes) not in (0, len(op.inputs)) or len(op.grad_flops) not in (0, len(op.inputs)):
            raise DecodeError(f"op {op.name}: gradients do not match its inputs")
        for node in op.grad_nodes:
            within(node, n_nodes, "node")
    for st in t.storages:
        within(st.producer, n_ops + 1, "producer op") if st.producer >= 0 else None
        within(st.last_use, n_ops + 1, "last-use op")
    for node in t.nodes:
        for edge in node.edges:
            if edge is not None:
                within(edge[0], n_nodes, "node")
        for sid in node.saved:
            within(sid, n_st, "saved storage")
    for seg in t.segments:
        within(seg.root, n_nodes, "segment root")
    for sid in t.param_sids.values():
        within(sid, n_st, "parameter storage")
    for root in t.kept_roots:
        within(root.node, n_nodes, "kept-root node")
        within(root.sid, n_st, "kept-root storage")
    for seg, _, sid in t.installed_grads:
        within(seg, len(t.segments), "segment")
        within(sid, n_st, "installed-gradient storage")
    if set(t.param_numel) != set(t.param_sids) or set(t.param_bytes) != set(t.param_sids):
        raise DecodeError("parameter tables disagree")
    if t.zero_grad_at is not None:
        within(t.zero_grad_at, n_ops + 1, "zero_grad op")
