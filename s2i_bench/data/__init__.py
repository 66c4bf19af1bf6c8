"""Data: videos -> the segment store (written once) and its audit.

- `discovery`: which files are sources, of which class and video id;
- `features`: the log-Mel spectrogram and the centre frame of each 1-s segment (SPEC section 3);
- `extract`: decoding every source once, in worker processes, cached for --resume;
- `splits`: video-disjoint splits, balance, the normalisation range;
- `dedup`, `audit`: near-duplicate videos and the leakage audit;
- `prepare`: the `prepare` command; `store`: the store format, `open_store`; `store_write`: `write_store`.
"""
