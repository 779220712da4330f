"""xferlab: which pretrained backbone transfers best to my microscopy data?"""

__version__ = "0.1.0"
