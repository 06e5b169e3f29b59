"""Parquet batch files on the bulk worker: plan a file into chunks, score each chunk into a part, merge the
parts into the output; the same steps serve `batcomputer score --local`."""
