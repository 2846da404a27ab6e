"""Python bindings of Caffe's protobuf schema (generated from proto/caffe.proto)."""
