"""Developer tools: the benchmark and its baseline. Not part of the product (helpers/)."""
