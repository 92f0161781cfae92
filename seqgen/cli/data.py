"""``seqgen preprocess`` and ``seqgen datasets``: building datasets on storage, and listing them."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from seqgen.cli.options import AddressOpt, JsonOpt, StorageOpt
from seqgen.cli.tables import table
from seqgen.storage import Storage


def preprocess(
    name: str = typer.Argument(..., help="Dataset name on storage; a preset (shakespeare, ptb-word, ptb-char, hutter) needs no inputs."),
    input: List[str] = typer.Option([], "--input", "-i", help="Training text file(s): paths or fsspec URLs (s3://, gs://, memory://)."),
    valid: List[str] = typer.Option([], "--valid", help="Validation file(s) (else use --valid-fraction)."),
    test: List[str] = typer.Option([], "--test", help="Test file(s)."),
    preset: Optional[str] = typer.Option(None, help="Take the settings of this preset (default: NAME when it names one); "
                                                     "--input/--valid/--test replace its files."),
    data_dir: Optional[str] = typer.Option(None, help="Where preset corpora and the IAM-OnDB root are read: a directory or "
                                                       "fsspec URL (default: $SEQGEN_DATA_DIR, else ../shared/data)."),
    tokenizer: Optional[str] = typer.Option(None, help="char | byte | word | bigram (default: the preset's, else char). "
                                                       "word: whitespace tokens with <eos> at every line end; valid/test "
                                                       "words unseen in train and words beyond --max-vocab become <unk>."),
    tokens_are_chars: Optional[bool] = typer.Option(None, "--tokens-are-chars/--tokens-are-text",
                                                    help="Each token stands for one character (Mikolov's char-level PTB: "
                                                         "bits/token = bits/char), or for its text's length."),
    valid_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for validation (hutter preset: 0.05); "
                                                              "handwriting: fraction of the forms (default 0.1)."),
    test_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for test; handwriting: of the forms."),
    max_vocab: Optional[int] = typer.Option(None, help="Vocabulary cap; words beyond it become <unk>, other kinds fail. 0 = none."),
    block_tokens: Optional[int] = typer.Option(None, help="Tokens per Parquet row (default 65536)."),
    chunk_mb: float = typer.Option(8.0, help="Bytes per parallel task, in MB (bounds memory per task)."),
    force: bool = typer.Option(False, help="Rebuild even if the sources and settings are unchanged."),
    handwriting: bool = typer.Option(False, help="Preprocess IAM-OnDB handwriting (--input = the IAM-OnDB root, a path or URL; "
                                                 "default <data-dir>/handwriting/iam-ondb)."),
    alphabet: str = typer.Option("full", help="Handwriting alphabet: full | graves57."),
    forms_per_task: int = typer.Option(16, help="Handwriting: forms per parallel task."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Tokenise a corpus with parallel Ray tasks into Parquet shards + manifest on storage."""
    from seqgen.runtime import ensure_ray

    st = Storage.from_url(storage)
    if handwriting:
        from seqgen.handwriting.dataset import preprocess_handwriting

        if len(input) > 1:
            raise ValueError("--handwriting takes one --input: the IAM-OnDB root")
        if st.shared_across_processes:
            ensure_ray(address)
        manifest = preprocess_handwriting(st, name, input[0] if input else None, alphabet=alphabet, force=force,
                                          valid_fraction=0.1 if valid_fraction is None else valid_fraction,
                                          test_fraction=test_fraction or 0.0, forms_per_task=forms_per_task,
                                          data_dir=data_dir)
    else:
        from seqgen.data.presets import text_spec
        from seqgen.data.text import preprocess_text

        spec = text_spec(name, input, valid, test, preset=preset, data_dir=data_dir, tokenizer=tokenizer,
                         tokens_are_chars=tokens_are_chars, valid_fraction=valid_fraction,
                         test_fraction=test_fraction, max_vocab=max_vocab, block_tokens=block_tokens,
                         chunk_bytes=int(chunk_mb * (1 << 20)))
        if st.shared_across_processes:
            ensure_ray(address)
        manifest = preprocess_text(st, name, spec, force=force)
    counts = ", ".join(f"{s}: {v.get('tokens', v.get('lines'))}" for s, v in manifest["splits"].items())
    typer.echo(f"dataset {name} -> {st.url_of(st.dataset_dir(name))} ({counts}; fingerprint {manifest['fingerprint'][:12]})")


def datasets(storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """List the preprocessed datasets on storage: kind, size per split, symbols, last update."""
    from dataclasses import asdict

    from seqgen.catalog import list_datasets

    st = Storage.from_url(storage)
    found = list_datasets(st)
    if as_json:
        typer.echo(json.dumps([asdict(d) for d in found], indent=2))
        return
    rows = [[d.name, d.kind, ", ".join(f"{s} {n:,}" for s, n in d.splits.items()) + f" {d.unit}",
             str(d.symbols), d.updated] for d in found]
    table(f"datasets on {st.url}", ["name", "kind", "size", "symbols", "updated"], rows)
