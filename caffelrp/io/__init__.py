"""Reading Caffe files: net definitions (.prototxt) and weights (.caffemodel, .binaryproto)."""
