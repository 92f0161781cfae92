"""Handwriting (Graves secs. 4-5): IAM-OnDB data, the prediction and synthesis networks, sampling,
the recognizer that measures legibility."""

#: the probability bias (eqs. 61-62) users get unless they ask for another, in the library, the CLI
#: and the endpoint alike; 0 is the paper's unbiased sampling. At 0.75 the bundled recognizer reads
#: the bundled model best (docs/handwriting.md: CER 0.21, against 0.26 at 0.5 and 0.24 at 2).
DEFAULT_BIAS = 0.75
