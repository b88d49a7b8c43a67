"""The intermediate form: a layer graph joined by blobs, with every blob's shape."""
