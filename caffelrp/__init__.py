"""caffelrp: run Caffe image classifiers without Caffe and explain their decisions with LRP.

    net = caffelrp.Net("deploy.prototxt", "weights.caffemodel")
    out = net.forward(x)          # x: float32 (N, C, H, W), preprocessed as the model expects
    net.blobs["fc8"]              # every blob by name, after the forward pass
"""
__version__ = "0.1.0"

from .errors import (ArgumentError, CaffeLRPError, InputShapeError, NoSuchLayerError,  # noqa: F401
                     PrototxtError, ShapeError, UnsupportedLayerError, WeightsError)
from .threads import get_num_threads, make_gemm_blas_single_threaded, set_num_threads  # noqa: F401
from .threads import passive_wait_for_the_command

passive_wait_for_the_command()    # before the first kernel (and libgomp) is loaded

from .net import Net  # noqa: F401,E402
from .preprocess import Transformer, load_image  # noqa: F401
from .caffe_blas import set_caffe_blas  # noqa: F401
from .winograd import set_winograd, set_winograd_relevance  # noqa: F401

make_gemm_blas_single_threaded()
