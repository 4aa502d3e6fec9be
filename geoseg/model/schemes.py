"""Known class schemes (value, name, colour), usable as ``classes`` of a model card."""

from __future__ import annotations

#: Dynamic World v1 land-cover classes (Brown et al. 2022), with its official palette.
DYNAMIC_WORLD = [
    {"value": 0, "name": "water", "color": "#419BDF"},
    {"value": 1, "name": "trees", "color": "#397D49"},
    {"value": 2, "name": "grass", "color": "#88B053"},
    {"value": 3, "name": "flooded_vegetation", "color": "#7A87C6"},
    {"value": 4, "name": "crops", "color": "#E49635"},
    {"value": 5, "name": "shrub_and_scrub", "color": "#DFC35A"},
    {"value": 6, "name": "built", "color": "#C4281B"},
    {"value": 7, "name": "bare", "color": "#A59B8F"},
    {"value": 8, "name": "snow_and_ice", "color": "#B39FE1"},
]

#: Sentinel-2 bands of the shipped sample and of the default model, in order.
S2_DW_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")
