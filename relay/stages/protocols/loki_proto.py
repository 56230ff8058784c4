"""Loki's push protobuf (`logproto.PushRequest`), built with protobuf's own descriptor API.

No installed package ships Loki's `push.proto` and there is no protoc here, so this file
states the same messages as a FileDescriptorProto and lets protobuf make the classes: the
parsing is protobuf's (upb), not ours. Mirrors grafana/loki `pkg/push/push.proto`:

    message PushRequest      { repeated StreamAdapter streams = 1; }
    message StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    message EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
                               repeated LabelPairAdapter structuredMetadata = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }

Loki's gogoproto options (non-nullable, stdtime) change only the Go types, not the wire.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: Any, *, repeated: bool = False, type_name: str = "") -> Any:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _build() -> Any:
    pool = descriptor_pool.DescriptorPool()  # a private pool: nothing else can clash with `logproto`
    timestamp_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp_file)
    pool.Add(timestamp_file)
    push = descriptor_pb2.FileDescriptorProto(
        name="pkg/push/push.proto", package="logproto", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
        message_type=[
            descriptor_pb2.DescriptorProto(name="PushRequest", field=[
                _field("streams", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".logproto.StreamAdapter")]),
            descriptor_pb2.DescriptorProto(name="StreamAdapter", field=[
                _field("labels", 1, _F.TYPE_STRING),
                _field("entries", 2, _F.TYPE_MESSAGE, repeated=True, type_name=".logproto.EntryAdapter"),
                _field("hash", 3, _F.TYPE_UINT64)]),
            descriptor_pb2.DescriptorProto(name="EntryAdapter", field=[
                _field("timestamp", 1, _F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
                _field("line", 2, _F.TYPE_STRING),
                _field("structuredMetadata", 3, _F.TYPE_MESSAGE, repeated=True,
                       type_name=".logproto.LabelPairAdapter")]),
            descriptor_pb2.DescriptorProto(name="LabelPairAdapter", field=[
                _field("name", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)]),
        ])
    pool.Add(push)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


PushRequest = _build()
