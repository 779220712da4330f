"""Checks before any job runs: the preflight of a run or sweep (`preflight`, a Hydra callback) and
the checks of a job's inputs it runs without a job (`inputs`: weights, dataset files, scale, seen
targets, split, publishing). They read data, backbones and ssl, so they sit above them; the
`runtime` package below holds only what every package may use."""
