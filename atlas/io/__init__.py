"""Reading data sets, writing outputs atomically, and the on-disk store."""
