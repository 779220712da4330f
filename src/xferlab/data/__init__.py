"""Image stores, labels, splits and the datasets that read them."""
