"""Data shipped with lt about the papers it reproduces: what each paper reports, with the
place in the paper every number comes from (`ltcli.results.reproduce` reads it)."""
