"""Plain Python values <-> flyteidl2 literals, for the values a workload file can declare.

The sandbox stores inputs and outputs as real ``flyteidl2`` literals, so the SDK reads them
back with its own type engine (``ActionDetails.inputs()``, ``rerun(..., lr=0.2)``). A workload
declares plain YAML values; this module maps them both ways and derives the task interface
(``TypedInterface``) from them. Supported: ``None``, ``bool``, ``int``, ``float``, ``str``,
lists (collections) and string-keyed mappings (maps) of those, nested. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flyteidl2.core import interface_pb2, literals_pb2, types_pb2
from flyteidl2.task import common_pb2

__all__ = [
    "from_literal",
    "inputs_from_values",
    "interface_for",
    "literal_type_of",
    "outputs_from_values",
    "to_literal",
    "values_from_literals",
]


def literal_type_of(value: Any) -> types_pb2.LiteralType:
    """The ``LiteralType`` the SDK's type engine expects for ``value``.

    A list takes the type of its first element (STRING when empty), a mapping that of its first
    value. Raises ``TypeError`` for anything else (a workload validation error upstream).
    """
    if value is None:
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.NONE)
    if isinstance(value, bool):
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.BOOLEAN)
    if isinstance(value, int):
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.INTEGER)
    if isinstance(value, float):
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.FLOAT)
    if isinstance(value, str):
        return types_pb2.LiteralType(simple=types_pb2.SimpleType.STRING)
    if isinstance(value, list | tuple):
        inner = (
            literal_type_of(value[0]) if value else types_pb2.LiteralType(simple=types_pb2.SimpleType.STRING)
        )
        return types_pb2.LiteralType(collection_type=inner)
    if isinstance(value, Mapping):
        first = next(iter(value.values()), "")
        return types_pb2.LiteralType(map_value_type=literal_type_of(first))
    raise TypeError(f"unsupported value {value!r} of type {type(value).__name__}")


def to_literal(value: Any) -> literals_pb2.Literal:
    """``value`` as a ``Literal`` (see ``literal_type_of`` for what is supported)."""
    if value is None:
        return literals_pb2.Literal(scalar=literals_pb2.Scalar(none_type=literals_pb2.Void()))
    if isinstance(value, bool):
        return _primitive(literals_pb2.Primitive(boolean=value))
    if isinstance(value, int):
        return _primitive(literals_pb2.Primitive(integer=value))
    if isinstance(value, float):
        return _primitive(literals_pb2.Primitive(float_value=value))
    if isinstance(value, str):
        return _primitive(literals_pb2.Primitive(string_value=value))
    if isinstance(value, list | tuple):
        return literals_pb2.Literal(
            collection=literals_pb2.LiteralCollection(literals=[to_literal(v) for v in value])
        )
    if isinstance(value, Mapping):
        return literals_pb2.Literal(
            map=literals_pb2.LiteralMap(literals={str(k): to_literal(v) for k, v in value.items()})
        )
    raise TypeError(f"unsupported value {value!r} of type {type(value).__name__}")


def _primitive(p: literals_pb2.Primitive) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=p))


def from_literal(lit: literals_pb2.Literal) -> Any:
    """The plain Python value of a literal; literals outside the supported set come back as
    their text form (``str(lit)``) so a snapshot never fails."""
    kind = lit.WhichOneof("value")
    if kind == "scalar":
        scalar = lit.scalar
        sk = scalar.WhichOneof("value")
        if sk == "primitive":
            pk = scalar.primitive.WhichOneof("value")
            if pk == "integer":
                return scalar.primitive.integer
            if pk == "float_value":
                return scalar.primitive.float_value
            if pk == "string_value":
                return scalar.primitive.string_value
            if pk == "boolean":
                return scalar.primitive.boolean
            if pk == "datetime":
                return scalar.primitive.datetime.ToJsonString()
            if pk == "duration":
                return scalar.primitive.duration.ToJsonString()
        if sk == "none_type":
            return None
        if sk == "binary":
            return _binary_value(scalar.binary)
    if kind == "collection":
        return [from_literal(v) for v in lit.collection.literals]
    if kind == "map":
        return {k: from_literal(v) for k, v in lit.map.literals.items()}
    return str(lit)


def _binary_value(binary: literals_pb2.Binary) -> Any:
    # The SDK sends dicts, dataclasses and pydantic models as msgpack; decode when possible.
    if binary.tag == "msgpack":
        try:
            import msgpack  # type: ignore[import-untyped,unused-ignore]

            return msgpack.unpackb(binary.value)
        except Exception:
            return binary.value.hex()
    return binary.value.hex()


def inputs_from_values(values: Mapping[str, Any]) -> common_pb2.Inputs:
    """A ``task.Inputs`` message with one named literal per value, in the mapping's order."""
    return common_pb2.Inputs(
        literals=[common_pb2.NamedLiteral(name=k, value=to_literal(v)) for k, v in values.items()]
    )


def outputs_from_values(values: Mapping[str, Any]) -> common_pb2.Outputs:
    """A ``task.Outputs`` message with one named literal per value, in the mapping's order."""
    return common_pb2.Outputs(
        literals=[common_pb2.NamedLiteral(name=k, value=to_literal(v)) for k, v in values.items()]
    )


def values_from_literals(named: Any) -> dict[str, Any]:
    """``{name: value}`` of an ``Inputs`` / ``Outputs`` message (its ``literals`` field)."""
    return {nl.name: from_literal(nl.value) for nl in named.literals}


def interface_for(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> interface_pb2.TypedInterface:
    """The typed interface of a task whose example inputs and outputs are given."""

    def vmap(values: Mapping[str, Any]) -> interface_pb2.VariableMap:
        return interface_pb2.VariableMap(
            variables=[
                interface_pb2.VariableEntry(key=k, value=interface_pb2.Variable(type=literal_type_of(v)))
                for k, v in values.items()
            ]
        )

    return interface_pb2.TypedInterface(inputs=vmap(inputs), outputs=vmap(outputs))
