"""Caffe models (``.prototxt`` + ``.caffemodel``) read without Caffe: the files, the layer graph as a module,
and the zoo ResNet a graph is. The conversion with its preprocessing is :func:`resnetlab.deploy.caffe.from_caffe`."""

from .graph import CaffeGraphError, CaffeNet
from .proto import CaffeFormatError, read_caffemodel
from .prototxt import PrototxtError, read_prototxt

__all__ = ["CaffeNet", "read_caffemodel", "read_prototxt", "CaffeFormatError", "CaffeGraphError", "PrototxtError"]
