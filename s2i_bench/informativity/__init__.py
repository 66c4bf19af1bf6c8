"""Informativity classifiers: translators -> a candidate pool -> labels -> the five CNNs.

- `pool`: held-out sounds translated by many translator models, every image with its provenance;
- `labels`: labels from one source (the synthetic judge, or people's CSV) and the balanced sets;
- `classifiers`: training the five informativity CNNs and the class-match CNN;
- `bundle`: the trained bundle read back (`load_bundle`), what scoring needs;
- `authors`: the authors' five classifiers imported into a bundle.
"""
