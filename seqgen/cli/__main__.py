"""``python -m seqgen.cli``: the same command line as ``seqgen``."""

from seqgen.cli import app

app(prog_name="seqgen")
