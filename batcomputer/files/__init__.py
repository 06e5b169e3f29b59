"""Files users hand in and get back: storage roots (local or fsspec), tables read and written against a
schema (Parquet), and the HTTP client the command line and flows use to reach the gateway."""
