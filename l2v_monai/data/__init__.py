"""Data sources (MIMIC-CXR, manifests, OpenI, proof-of-concept sets), transforms and caching."""
