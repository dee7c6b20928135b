"""Training-time pieces that must agree with Caffe bit for bit.

``lr_policy`` (learning-rate schedules), ``solvers`` (the six update rules with
Caffe's clip → normalize → regularize → update order) and ``smoothing`` (the
running loss the log prints).  Every scalar is rounded to float32 where Caffe's
``Dtype`` is ``float``, so printed values and trained weights match Caffe's.
"""
