"""What every augmenter declares (the run loop and the label run read these; they never probe)."""


class Augmenter:
    """Base of the classes in augmenters.REGISTRY. `name`: the YAML name; `writes_labels`: fnmatch patterns of the
    labels it writes into its source dataset (the label run refuses those label_names, so neither tool replaces
    the other's labels); an augmenter that writes none keeps the empty tuple."""

    name = ""
    writes_labels = ()
