"""seqgen: recurrent sequence generators (Graves 2013, char-rnn, RNN LMs) on Ray."""
