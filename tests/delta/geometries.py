"""Conv geometries the sparse-delta kernels are checked on: plain, strided, padded, dilated."""

GEOMETRIES = [  # kernel, stride, padding, dilation
    (1, 1, 0, 1),
    (1, 2, 0, 1),
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (3, 1, 0, 1),
    (3, 2, 2, 2),
]
