"""Command-line entry points, installed as console scripts (``[project.scripts]`` in pyproject.toml).

One module per command, each with ``main(argv=None) -> int``; ``scripts/<module>.py`` in a checkout
calls the same ``main``:

* ``l2v-prepare-mimic``: MIMIC-CXR label files (or a hand-labelled CSV) → datalist JSON;
* ``l2v-prepare-manifest``: a site's manifest CSV → datalist JSON;
* ``l2v-prepare-openi``: the OpenI report archive → hand-labelled test datalist;
* ``l2v-label-reports``: report text → label sets, as a manifest CSV (``[reports]`` extra);
* ``l2v-embed-reports``: report text → an embedding cache for the image+report network (``[reports]``);
* ``l2v-evaluate``: a predictions CSV scored against hand labels: AUC tables, ROC plots (``[eval]``);
* ``l2v-labeler-quality``: the report labelers against OpenI's MeSH labels (``[reports]``, ``[eval]``).
"""
