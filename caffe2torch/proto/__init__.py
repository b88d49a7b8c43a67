"""Protocol buffer schema for Caffe files (generated code; see tools/gen_proto.py)."""
