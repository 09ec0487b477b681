"""The science in plain numpy: I/O, normalisation, degradation, sampling windows, metrics,
attention-score normalisation and the simulated x-ray sample. No torch, no Qt."""
