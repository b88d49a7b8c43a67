"""Numpy reference implementations of Caffe layers, written from the Caffe C++ source."""
