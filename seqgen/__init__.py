"""seqgen: recurrent sequence generators (Graves 2013, char-rnn, RNN LMs) on Ray."""

import os as _os

if not _os.environ.get("RAY_ADDRESS"):  # the local default: Ray on loopback only (see runtime.py)
    from seqgen.runtime import apply_local_env as _apply_local_env

    _apply_local_env()
