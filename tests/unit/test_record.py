"""rootless.record behaves as the standard dataclasses do for the declarations the project uses."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import pytest

from rootless import record
from rootless.record import dataclass, field


def _pair(frozen: bool) -> tuple[type[Any], type[Any]]:
    """The same declaration through both decorators: (ours, the standard one)."""

    def declare(deco: Any, fld: Any) -> type[Any]:
        @deco(frozen=frozen)
        class Point:
            """A point."""

            x: int
            y: int = 2
            tags: tuple[str, ...] = ()
            extra: list[str] = fld(default_factory=list)
            note: str = fld(default="n", repr=False, compare=False)
            kind: ClassVar[str] = "point"

        return Point

    return declare(dataclass, field), declare(dataclasses.dataclass, dataclasses.field)


@pytest.mark.parametrize("frozen", [True, False])
def test_same_behaviour_as_dataclasses(frozen: bool) -> None:
    ours, std = _pair(frozen)
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}), ((1, 3), {"tags": ("a",)}), ((), {"x": 5, "extra": ["e"], "note": "z"})]
    for args, kw in cases:
        a, b = ours(*args, **kw), std(*args, **kw)
        assert repr(a) == repr(b)
        assert [getattr(a, n) for n in ("x", "y", "tags", "extra", "note")] == \
               [getattr(b, n) for n in ("x", "y", "tags", "extra", "note")]
    assert ours(1) == ours(1) and ours(1) != ours(2) and ours(1) == ours(1, note="other")  # note: compare=False
    assert ours(1) != std(1)  # another class
    assert ours.__match_args__ == std.__match_args__ == ("x", "y", "tags", "extra", "note")
    assert ours.kind == "point" and ours.y == 2
    assert ours(1).extra is not ours(1).extra  # one list per instance
    if frozen:
        for cls in (ours, std):  # hashable by value, so not with a list in it
            with pytest.raises(TypeError, match="unhashable"):
                hash(cls(1))
        from rootless.spec import IdMap

        assert hash(IdMap(0, 1, 2)) == hash(IdMap(0, 1, 2)) and len({IdMap(0, 1, 2), IdMap(0, 1, 2)}) == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours(1).x = 3
        with pytest.raises(dataclasses.FrozenInstanceError):
            del ours(1).x
    else:
        with pytest.raises(TypeError):
            hash(ours(1))
        p = ours(1)
        p.x = 7
        assert p.x == 7


def test_construction_errors() -> None:
    ours, _ = _pair(True)
    with pytest.raises(TypeError, match="missing"):
        ours()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        ours(1, z=2)
    with pytest.raises(TypeError, match="multiple values"):
        ours(1, x=2)
    with pytest.raises(TypeError, match="positional"):
        ours(1, 2, (), [], "n", "too many")


def test_declaration_errors() -> None:
    with pytest.raises(TypeError, match="non-default argument"):
        @dataclass
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]
    with pytest.raises(ValueError, match="mutable default"):
        @dataclass
        class Bad2:
            a: list[int] = []  # type: ignore[misc]  # noqa: RUF012


def test_post_init_and_inheritance() -> None:
    @dataclass(frozen=True)
    class Base:
        a: int

        def __post_init__(self) -> None:
            object.__setattr__(self, "a", abs(self.a))

    @dataclass(frozen=True)
    class Child(Base):
        b: str = "x"

    c = Child(-3, b="y")
    assert (c.a, c.b) == (3, "y") and repr(c).endswith("Child(a=3, b='y')")
    assert record.field_names(Child) == ("a", "b")
    assert [f.name for f in dataclasses.fields(Child)] == ["a", "b"]


def test_standard_functions_work_on_records() -> None:
    ours, std = _pair(True)
    a: Any = ours(1, tags=("t",))
    assert all(dataclasses.is_dataclass(v) for v in (a, ours))
    assert dataclasses.asdict(a) == dataclasses.asdict(std(1, tags=("t",)))
    b = dataclasses.replace(a, y=9)
    assert type(b) is ours and (b.x, b.y, b.tags) == (1, 9, ("t",))
    assert record.replace(a, y=9) == b
    f = {x.name: x for x in dataclasses.fields(ours)}
    assert f["extra"].default_factory is list and f["y"].default == 2 and f["note"].compare is False
    assert f["x"].type == "int" and f["x"].default is dataclasses.MISSING is f["x"].default_factory


def test_nested_asdict_and_json_round_trip_of_a_spec() -> None:
    from rootless.spec import IdMap, Mount, Process, RootfsPlan, Spec

    spec = Spec(id="c", name="n", process=Process(args=("true",)), rootfs=RootfsPlan("overlay", "/t", ("/l",)),
                mounts=(Mount("/proc", "proc"),), uid_map=(IdMap(0, 1000, 1),))
    d = dataclasses.asdict(spec)
    assert d["process"]["args"] == ("true",) and d["mounts"][0] == {"destination": "/proc", "type": "proc",
                                                                     "source": "", "options": ()}
    json.dumps(d, default=sorted)  # what state.py writes
    assert Spec(**{**d, "process": Process(**d["process"]), "rootfs": RootfsPlan(**d["rootfs"]),
                   "mounts": tuple(Mount(**m) for m in d["mounts"]), "uid_map": tuple(IdMap(**m) for m in d["uid_map"]),
                   "network": spec.network}) == spec
