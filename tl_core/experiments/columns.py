"""The columns of an experiment's table: what ``tl_core.experiments.table`` writes into a row and
``tl_core.experiments.report`` reads, named in one place (the report needs no run folder, only these)."""

TABLE_COLUMNS = ["strategy", "state", "final val acc", "best val acc", "best epoch", "wall time (s)",
                 "trainable params", "images/s", "images/s of", "val images", "train images", "images per class",
                 "key", "run", "series", "x"]
RATE_OF_FEATURES = "backbone feature extraction"  # frozen members: the body's pass over the images
RATE_OF_TRAINING = "training steps"  # the others: forward and backward passes, median over batches
