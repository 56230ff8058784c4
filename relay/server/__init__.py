"""The HTTP shell: the aiohttp application, ingest and admin routes, probes, auth. The only importer of aiohttp.web."""
