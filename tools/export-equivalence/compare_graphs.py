#!/usr/bin/python3
"""Compares two exported model.onnx files as graphs, ignoring node names and node order.

Usage: compare_graphs.py A/model.onnx B/model.onnx   (exit 0: same graph; 1: differs, first difference printed)

Each value is replaced by a structural signature: a graph input by its name, an initializer by a hash of
its type, dims and bytes (external data read from the file beside the model), a node output by
(domain, op, attributes, input signatures, output index). Two graphs are the same when their inputs,
outputs, opsets, metadata, initializer contents and the multiset of node signatures agree.
Needs Debian's python3-onnx (run with /usr/bin/python3).
"""
import hashlib
import os
import sys

import onnx
from onnx import AttributeProto


def tensor_bytes(tensor, directory):
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        fields = {entry.key: entry.value for entry in tensor.external_data}
        with open(os.path.join(directory, fields["location"]), "rb") as data:
            data.seek(int(fields.get("offset", "0")))
            return data.read(int(fields["length"]))
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = ""
    return copy.SerializeToString()


def tensor_signature(tensor, directory):
    digest = hashlib.sha256(tensor_bytes(tensor, directory)).hexdigest()
    return ("tensor", tensor.data_type, tuple(tensor.dims), digest)


def attribute_signature(attribute, directory):
    kind = attribute.type
    if kind == AttributeProto.FLOAT:
        value = attribute.f
    elif kind == AttributeProto.INT:
        value = attribute.i
    elif kind == AttributeProto.STRING:
        value = attribute.s
    elif kind == AttributeProto.INTS:
        value = tuple(attribute.ints)
    elif kind == AttributeProto.FLOATS:
        value = tuple(attribute.floats)
    elif kind == AttributeProto.TENSOR:
        value = tensor_signature(attribute.t, directory)
    else:
        value = attribute.SerializeToString()
    return (attribute.name, kind, value)


def signatures(path):
    model = onnx.load(path, load_external_data=False)
    directory = os.path.dirname(os.path.abspath(path))
    graph = model.graph
    values = {}
    for value in graph.input:
        values[value.name] = ("input", value.name)
    for tensor in graph.initializer:
        values[tensor.name] = tensor_signature(tensor, directory)
    values[""] = ("absent",)
    nodes = list(graph.node)
    node_signatures = []
    pending = nodes
    while pending:
        waiting = []
        for node in pending:
            if any(name not in values for name in node.input):
                waiting.append(node)
                continue
            attributes = tuple(sorted(attribute_signature(a, directory) for a in node.attribute))
            base = (node.domain, node.op_type, attributes, tuple(values[name] for name in node.input))
            digest = hashlib.sha256(repr(base).encode()).hexdigest()
            node_signatures.append(digest)
            for index, name in enumerate(node.output):
                if name:
                    values[name] = ("node", digest, index)
        if len(waiting) == len(pending):
            raise SystemExit(f"{path}: {len(waiting)} nodes read values no node makes (first: {waiting[0].name})")
        pending = waiting

    def value_info(value):
        return (value.name, value.type.SerializeToString())

    return {
        "opsets": sorted((o.domain, o.version) for o in model.opset_import),
        "ir_version": model.ir_version,
        "metadata": sorted((p.key, p.value) for p in model.metadata_props),
        "inputs": [value_info(v) for v in graph.input],
        "outputs": [value_info(v) for v in graph.output],
        "output_values": [values.get(v.name) for v in graph.output],
        "initializers": sorted(tensor_signature(t, directory)[1:] for t in graph.initializer),
        "nodes": sorted(node_signatures),
    }


def main():
    a, b = signatures(sys.argv[1]), signatures(sys.argv[2])
    for key in a:
        if a[key] != b[key]:
            print(f"differs in {key}")
            if isinstance(a[key], list):
                only_a = [x for x in a[key] if x not in b[key]][:3]
                only_b = [x for x in b[key] if x not in a[key]][:3]
                print(f"  only in {sys.argv[1]}: {str(only_a)[:400]}")
                print(f"  only in {sys.argv[2]}: {str(only_b)[:400]}")
            return 1
    print(f"same graph ({len(a['nodes'])} nodes, {len(a['initializers'])} initializers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
