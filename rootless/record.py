"""``@dataclass`` and ``field`` for the data types on `rootless run`'s path, without the
start-up cost of the standard module.

Importing :mod:`dataclasses` pulls in :mod:`inspect` (with ast, dis and tokenize), and every
decorated class compiles five or six methods with ``exec()`` and, when it has no docstring,
calls ``inspect.signature``: ≈5 ms to import plus ≈0.5 ms a class here, a quarter of a
``rootless run --rm`` of a stored image when thirty such classes lie on its path.

This decorator reads the same declaration (annotations, defaults, ``field(default=...)``,
``field(default_factory=...)``, ``frozen=True``, ``__post_init__``) and gives the class the
shared methods below, so declaring one costs microseconds. Instances behave as the standard
module's do: keyword or positional construction in field order, ``repr``, field-wise ``==``,
``hash`` for frozen classes (mutable ones are unhashable), ``FrozenInstanceError`` on
assignment, ``__match_args__``. The classes are still dataclasses to ``dataclasses.fields``,
``replace``, ``asdict``, ``is_dataclass`` and pytest: ``__dataclass_fields__`` is built on
first access, by the standard module itself from the same declaration, so only code that
asks for it pays for it. Type checkers see the standard semantics (PEP 681).

Not supported, as nothing here uses them: ``order``, ``slots``, ``kw_only``, ``InitVar``,
``init=False`` fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, dataclass_transform, overload

if TYPE_CHECKING:
    import dataclasses

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)
_MISSING: Any = type("_MISSING", (), {"__repr__": lambda self: "<missing>"})()

# __init__'s table: (name, kind, default or factory); one of these kinds
_REQUIRED, _DEFAULT, _FACTORY = 0, 1, 2


class Field:
    """What ``field(...)`` returns in a class body: the default or the factory of one field."""

    __slots__ = ("default", "default_factory", "repr", "compare")

    def __init__(self, default: Any, default_factory: Any, repr: bool, compare: bool) -> None:  # noqa: A002
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare


@overload
def field(*, default: _T, repr: bool = True, compare: bool = True) -> _T: ...  # noqa: A002


@overload
def field(*, default_factory: Callable[[], _T], repr: bool = True, compare: bool = True) -> _T: ...  # noqa: A002


@overload
def field(*, repr: bool = True, compare: bool = True) -> Any: ...  # noqa: A002


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING, repr: bool = True,  # noqa: A002
          compare: bool = True) -> Any:
    """A field with a default (``default=``) or one made per instance (``default_factory=``),
    or left out of ``repr`` (``repr=False``) or of ``==`` and ``hash`` (``compare=False``)."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, compare)


class _Info:
    """One decorated class's fields, in declaration order (inherited ones first)."""

    __slots__ = ("fields", "types", "init", "repr", "compare", "frozen", "post_init")

    def __init__(self, fields: dict[str, Field], types: dict[str, Any], frozen: bool, post_init: bool) -> None:
        self.fields = fields
        self.types = types  # the annotations, as written
        self.init = tuple((name, _REQUIRED if f.default_factory is _MISSING and f.default is _MISSING else
                           _FACTORY if f.default_factory is not _MISSING else _DEFAULT,
                           f.default_factory if f.default_factory is not _MISSING else f.default)
                          for name, f in fields.items())
        self.repr = tuple(name for name, f in fields.items() if f.repr)
        self.compare = tuple(name for name, f in fields.items() if f.compare)
        self.frozen = frozen
        self.post_init = post_init


def _info(obj: object) -> _Info:
    info: _Info = type(obj).__record__  # type: ignore[attr-defined]
    return info


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    info = _info(self)
    table = info.init
    if len(args) > len(table):
        raise TypeError(f"{type(self).__name__}() takes {len(table)} positional arguments but {len(args)} were given")
    put = object.__setattr__
    missing = []
    for i, (name, kind, value) in enumerate(table):
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            put(self, name, args[i])
        elif name in kwargs:
            put(self, name, kwargs.pop(name))
        elif kind == _DEFAULT:
            put(self, name, value)
        elif kind == _FACTORY:
            put(self, name, value())
        else:
            missing.append(name)
    if missing:
        raise TypeError(f"{type(self).__name__}() missing required argument(s): {', '.join(map(repr, missing))}")
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if info.post_init:
        self.__post_init__()


def _repr(self: Any) -> str:
    names = _info(self).repr
    return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = _info(self).compare
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in _info(self).compare))


def _frozen(self: Any, name: str, value: Any = None) -> None:
    from dataclasses import FrozenInstanceError

    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_del(self: Any, name: str) -> None:
    from dataclasses import FrozenInstanceError

    raise FrozenInstanceError(f"cannot delete field {name!r}")


class _DataclassFields:
    """``__dataclass_fields__`` on first access: the standard module's Field objects, made by
    decorating a stand-in class with the same fields (its public interface, not its internals)."""

    def __get__(self, obj: object, owner: type) -> dict[str, dataclasses.Field[Any]]:
        import dataclasses

        decorated = next(c for c in owner.__mro__ if "__record__" in c.__dict__)
        info: _Info = decorated.__dict__["__record__"]
        ns: dict[str, Any] = {"__annotations__": {}, "__module__": decorated.__module__,
                              "__qualname__": decorated.__qualname__, "__doc__": decorated.__doc__}
        for name, f in info.fields.items():
            ns["__annotations__"][name] = info.types[name]
            if f.default_factory is not _MISSING:
                ns[name] = dataclasses.field(default_factory=f.default_factory, repr=f.repr, compare=f.compare)
            elif f.default is not _MISSING:
                ns[name] = dataclasses.field(default=f.default, repr=f.repr, compare=f.compare)
            else:
                ns[name] = dataclasses.field(repr=f.repr, compare=f.compare)
        stand_in: Any = dataclasses.dataclass(frozen=info.frozen)(type(decorated.__name__, (), ns))
        made: dict[str, dataclasses.Field[Any]] = stand_in.__dataclass_fields__
        type.__setattr__(decorated, "__dataclass_fields__", made)
        return made


_FIELDS_DESCRIPTOR = _DataclassFields()


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and (text.startswith(("ClassVar", "typing.ClassVar")))


def _process(cls: _C, frozen: bool) -> _C:
    fields: dict[str, Field] = {}
    types: dict[str, Any] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited = base.__dict__.get("__record__")
        if inherited is not None:
            fields.update(inherited.fields)
            types.update(inherited.types)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, Field):
            f = value
            if f.default is _MISSING:
                type.__delattr__(cls, name)
            else:
                type.__setattr__(cls, name, f.default)
        else:
            f = Field(value, _MISSING, True, True)
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: use default_factory")
        fields[name] = f
        types[name] = annotation
    seen_default = False
    for name, f in fields.items():
        if f.default is _MISSING and f.default_factory is _MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {name!r} follows default argument")
        else:
            seen_default = True
    own = cls.__dict__
    setattr_ = type.__setattr__
    setattr_(cls, "__record__", _Info(fields, types, frozen, hasattr(cls, "__post_init__")))
    setattr_(cls, "__dataclass_fields__", _FIELDS_DESCRIPTOR)
    setattr_(cls, "__match_args__", tuple(fields))
    if "__init__" not in own:
        setattr_(cls, "__init__", _init)
    if "__repr__" not in own:
        setattr_(cls, "__repr__", _repr)
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if "__eq__" not in own:
        setattr_(cls, "__eq__", _eq)
    if not explicit_hash:
        setattr_(cls, "__hash__", _hash if frozen else None)
    if frozen:
        setattr_(cls, "__setattr__", _frozen)
        setattr_(cls, "__delattr__", _frozen_del)
    return cls


@overload
def dataclass(cls: _C, /) -> _C: ...


@overload
def dataclass(*, frozen: bool = False) -> Callable[[_C], _C]: ...


@dataclass_transform(field_specifiers=(field,))
def dataclass(cls: _C | None = None, /, *, frozen: bool = False) -> _C | Callable[[_C], _C]:
    """Declare a data class as ``dataclasses.dataclass`` does (``frozen`` is the one option)."""
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of ``obj`` with ``changes`` (``dataclasses.replace`` for these classes)."""
    for name in _info(obj).fields:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of a class made by ``dataclass`` here, in order."""
    info: _Info = cls.__record__  # type: ignore[attr-defined]
    return tuple(info.fields)
