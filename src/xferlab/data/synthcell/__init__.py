"""SynthCell: a procedural benchmark of fluorescence crops driven by the real OpenCell annotations.

- `geometry`: cell and nucleus layout of one crop (centre cell, neighbours, partial cells);
- `patterns`: how each of the 17 OpenCell categories (and the HPA reference channels) looks;
- `render`: a crop from a layout, a target's pattern mixture and the imaging nuisances;
- `domains`: the two domains (`opencell` target, `hpa` source) and their target lists;
- `source`: the dataset source that renders a domain into an image store.
"""
