"""What GIS users open: QGIS styles (``style``), raster attribute tables (``rat``), quicklooks (``quicklook``),
STAC Items (``stac``), the COG check (``cog_check``) and the HTML report (``report``)."""
